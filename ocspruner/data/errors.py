"""The one exception type of the data layer.

Every problem with a user's data (wrong name, missing directory, missing or
corrupt file, impossible split) is raised as DataError with a single line that
names the problem and the fix, so the CLI can print it without a traceback.
It subclasses ValueError so generic callers that catch bad-argument errors
still catch it.
"""


class DataError(ValueError):
    """A bad dataset request or bad data on disk; the message is one line."""

    def __init__(self, message):
        # keep messages one line even if a caller interpolates an OS error text
        super().__init__(" ".join(str(message).split()))
