"""`python -m serving --model DIR ...`: the container entrypoint, same flags as `llmrack serve`."""

from serving.cli import main

main()
