"""Reports are printed through rich, which reads `[...]` as markup: a bundle path, tier name or
prompt holding `[/x]` raised a MarkupError (and `[bold]` vanished from a name). Every string a
report takes from the user's data goes through `escaped` first."""

from __future__ import annotations

from rich.markup import escape


def escaped(value):
    """`value` with every string in it (dict keys too, so lookups stay consistent) escaped for
    rich markup; numbers, None and arrays unchanged. It prints as the text itself."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escaped(k): escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(escaped(v) for v in value)
    return value
