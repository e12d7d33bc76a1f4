"""Build tools for the repository (documentation generators); not part of the installed bridge."""
