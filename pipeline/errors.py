"""Error types the CLI maps to exit codes: ``UserError`` -> 2 (bad input), anything else -> 1."""


class UserError(Exception):
    """Bad input from the user (manifest, paths, arguments). The message is one line naming the field."""


class CorpusError(UserError):
    """A folder is not a corpus, or not the corpus the command expects."""
