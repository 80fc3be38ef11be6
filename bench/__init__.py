"""Benchmarks of the real callvault server on loopback (`make bench`, `python -m bench`):
each figure is printed beside the limit it is judged against, measured in the same run."""
