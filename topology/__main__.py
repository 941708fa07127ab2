"""`python -m topology`: write Ansible's copy of the facts (ansible/group_vars/all/topology.yml)."""

from topology.ansible import PATH, write

if __name__ == "__main__":
    write()
    print(f"wrote {PATH}")
