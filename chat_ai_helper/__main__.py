"""Run the command-line interface as ``python -m chat_ai_helper``."""

from chat_ai_helper.cli import main

raise SystemExit(main())
