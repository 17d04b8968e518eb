"""Files a command creates in the gateway's state directory belong to the service's user.

Why: `sudo edge-gateway keys rotate -c /etc/edge-gateway/plant.yaml` runs as root, and a
root-owned 0600 key in /var/lib/edge-gateway/keys is unreadable for the `edge-gateway`
user the unit runs as: the next reload fails. The owner of the state directory (systemd's
StateDirectory= makes it the unit's User=) is taken as the service user, so nothing here
needs to know the account's name.
"""

from __future__ import annotations

import os
from pathlib import Path


def hand_to_state_owner(state_dir: Path, created: Path) -> list[Path]:
    """chown `created` (a file or a directory tree) and every directory between it and
    `state_dir` to the state directory's owner, when run as root and that owner is someone
    else. Returns what was changed; nothing happens for an ordinary user or outside
    `state_dir` (a key directory configured elsewhere keeps the caller's ownership)."""
    if os.geteuid() != 0 or not state_dir.is_dir():
        return []
    owner = state_dir.stat()
    if owner.st_uid == 0:
        return []
    state = state_dir.resolve()
    target = created.resolve()
    if target != state and state not in target.parents:
        return []
    paths = [p for p in target.parents if state in p.parents]
    paths.append(target)
    if target.is_dir():
        paths += sorted(target.rglob("*"))
    changed = []
    for p in paths:
        st = p.lstat()
        if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(p, owner.st_uid, owner.st_gid, follow_symlinks=False)
            changed.append(p)
    return changed
