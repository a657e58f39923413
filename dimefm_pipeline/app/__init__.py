"""App layer: recipes and `dimefm run`, the demo, sentence-corpus tools, source relocation, and the
rich tables and plots of finished commands. The CLI (`dimefm_pipeline.cli`) is a thin layer over it."""
