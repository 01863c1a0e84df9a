"""Prints pip constraints that pin every dependency in setup.cfg (install_requires
and the test extra) to its floor: 'name>=X' becomes 'name==X'.

CI installs with them and runs the suite, so a floor the code has outgrown
fails there. A requirement without a '>=' floor is an error: every dependency
states the oldest version it is known to work with.
"""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"
FLOOR = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][^,;\s]*)")


def requirements(setup_cfg: Path) -> list[str]:
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    lines = config["options"]["install_requires"].splitlines()
    lines += config["options.extras_require"]["test"].splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def main() -> int:
    pins = []
    for requirement in requirements(SETUP_CFG):
        match = FLOOR.match(requirement)
        if not match:
            print(f"{SETUP_CFG.name}: {requirement!r} has no '>=' floor", file=sys.stderr)
            return 1
        pins.append(f"{match.group(1)}=={match.group(2)}")
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
