"""`python -m dimefm_pipeline ...` (and `torchrun -m dimefm_pipeline ...`) run the CLI."""

from dimefm_pipeline.cli import main

if __name__ == "__main__":
    main()
