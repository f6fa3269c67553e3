"""Submitting an admin form as a browser would: every field of the page's form, with a few changed."""

from html.parser import HTMLParser


class _FormFields(HTMLParser):
    """The values a browser would send for the page's main form (id ending in `_form`)."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, list[str]] = {}
        self.in_form = False
        self.select: str | None = None
        self.textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and (attrs.get("id") or "").endswith("_form"):
            self.in_form = True
        if not self.in_form or "name" not in attrs and tag != "option":
            return
        name = attrs.get("name")
        if tag == "input":
            kind = attrs.get("type", "text")
            if kind in ("submit", "button", "image", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in attrs:
                return
            self.values.setdefault(name, []).append(attrs.get("value", "on" if kind == "checkbox" else ""))
        elif tag == "select":
            self.select = name
            self.values.setdefault(name, [])
        elif tag == "option" and self.select is not None and "selected" in attrs:
            self.values[self.select].append(attrs.get("value", ""))
        elif tag == "textarea":
            self.textarea = name
            self.values[name] = [""]

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None

    def handle_data(self, data):
        if self.textarea is not None:
            self.values[self.textarea][0] += data


def form_values(page: bytes) -> dict[str, list[str]]:
    parser = _FormFields()
    parser.feed(page.decode())
    # The inlines' templates of a new row, which a browser copies only when "Add another" is clicked.
    return {name: value for name, value in parser.values.items() if "__prefix__" not in name}


def submit_admin_form(client, url: str, **changes):
    """GET the admin form at `url`, change some fields (None unticks or clears one), and POST it back.

    `changes` may name inline fields too (`memberships-0-role`), and a list for a multiple choice.
    """
    values = form_values(client.get(url).content)
    for name, value in changes.items():
        if value is None or value is False:
            values.pop(name, None)
        else:
            values[name] = value if isinstance(value, list) else ["on" if value is True else str(value)]
    response = client.post(url, values)
    assert response.status_code == 302, _errors(response)
    return response


def _errors(response) -> str:
    context = response.context or {}
    errors = [str(context["errors"])] if context.get("errors") else []
    for inline in context.get("inline_admin_formsets", []):
        errors += [str(inline.formset.errors), str(inline.formset.non_form_errors())]
    return f"the form was refused ({response.status_code}): {' '.join(errors)}"
