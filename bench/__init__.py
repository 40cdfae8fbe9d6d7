"""hotline's benchmark: ``python -m bench`` (full) or ``python -m bench --quick`` (CI).

See bench/README.md.
"""
