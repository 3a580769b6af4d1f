"""The `llmrack` command line: thin typer modules over the library, one per job."""
