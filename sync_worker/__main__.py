"""``python -m sync_worker`` runs the same CLI as the ``sync-worker`` console script."""

from sync_worker.cli import main

main(prog_name="sync-worker")
