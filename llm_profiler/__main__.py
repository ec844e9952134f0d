"""``python -m llm_profiler``: the command line."""

from .cli import main

raise SystemExit(main())
