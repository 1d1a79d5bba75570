"""python -m interventions <command> ... (interventions.cli.commands)."""

from interventions.cli.commands import main

raise SystemExit(main())
