"""python -m interventions <command> ... (interventions.cli.commands)."""

from interventions.cli.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
