"""Entry point for `pulumi up` (Pulumi.yaml: main: infra/)."""

import os
import sys

# Pulumi runs this file with infra/ as the working directory; the package lives one up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from infra.program import run  # noqa: E402

run()
