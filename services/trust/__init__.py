"""Trust distribution: the trusted root, the signing config, their TUF repository and snippets."""
