"""The one exception type the data layer raises for problems a user can fix."""

from metaunlab.errors import UserError


class DataError(UserError):
    """A data file, folder, flag or request is wrong in a way the user can fix.

    The message is always one sentence naming the offending file/folder/flag and saying
    what to do, with non-printable characters escaped (`metaunlab.errors.shown`). It
    subclasses ValueError so generic ``except ValueError`` handlers still catch it.
    """


def looks_like_html(head: bytes) -> bool:
    """Whether a file's first bytes are an HTML page rather than binary data.

    Browsers and ``wget`` on a login/quota page save HTML under the archive's or image's
    name; spotting it lets us say "re-download" instead of "corrupt zip".
    """
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype", b"<html"))
