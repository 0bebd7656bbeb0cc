"""The one error type users see: a message that names the file, line or field and says what to do."""


class StarchatError(ValueError):
    """An error the user can fix. The CLI prints it as one line and exits 2."""
