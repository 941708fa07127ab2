"""fleet: the operators' front door to an environment (cli.py: setup, deploy, rollback, maintain, health,
logs, details, audit, lock, unlock); health.py is the SSH health sweep, also `fleet-health`."""

import sys
import warnings

# Operators read the tool's own words. A library's warnings (asyncssh's DSA support under a newer
# cryptography, say) are for whoever takes the next lock, not for someone checking a fleet: hidden
# here, before any library is imported. -W or PYTHONWARNINGS shows them again; the tests fail on the
# project's own warnings (pyproject.toml).
if not sys.warnoptions:
    warnings.filterwarnings("ignore", module=r"(?!(fleet|topology)(\.|$))")
# The Ansible commands fleet runs import the same libraries (ansible-playbook prints the same DSA
# warning): the same rule for them, in their environment.
QUIET_LIBRARIES = {} if sys.warnoptions else {"PYTHONWARNINGS": "ignore"}
