"""authgate's benchmark (SPEC §11): `bench/run` or `python -m bench`; see bench/README.md."""
