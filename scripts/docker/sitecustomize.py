"""Clockwork's image only: a Python process started as root runs as the owner of the mounted project folder.

scripts/docker/entrypoint.sh drops the services to that uid/gid, but `docker compose exec` and healthchecks do
not pass through an entrypoint: they start as root. This hook (on PYTHONPATH in Dockerfile.base, nowhere else)
drops them too before any other code runs, so `docker compose exec inference python3 -m services.inference
promote v2` replaces config.yaml as the host user. No $CLOCKWORK_PROJECT_DIR, a folder owned by root, or a process
not started as root: nothing changes. A drop that fails stops the process (exit 126) rather than run it as root.
"""

import os
import sys


def _run_as_project_owner() -> None:
    project = os.environ.get("CLOCKWORK_PROJECT_DIR")
    if os.geteuid() != 0 or not project:
        return
    try:
        owner = os.stat(project)
    except OSError:
        return
    if owner.st_uid == 0:
        return
    try:
        os.setgroups([])
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)
    except OSError as e:
        sys.stderr.write(f"sitecustomize: cannot switch to uid {owner.st_uid} (owner of {project}): {e}\n")
        os._exit(126)
    os.environ["HOME"] = "/tmp"


_run_as_project_owner()
