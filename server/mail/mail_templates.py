"""The wording of outgoing mail: `string.Template` files, loaded and checked once (SPEC.md §7.3).

The built-in files are in server/mail/templates/; a deployment replaces any of them with a file of
the same name in `SPLITLINK_MAIL_TEMPLATES_DIR`. Each may use only its own placeholders
(`PLACEHOLDERS`), and a file that breaks a rule stops the server when it starts rather than
failing every message. In the HTML templates every value is HTML-escaped (SPEC.md §7.3, D7).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from string import Template

from server.mail.header_values import has_control_character, one_line

DEFAULT_TEMPLATES_DIR = Path(__file__).parent / "templates"

_LOGIN_LINK = frozenset(
    {
        "app_name",
        "recipient",
        "device",
        "requested_at",
        "link",
        "expires_in_minutes",
        "check_phrase",
    }
)
_NO_ACCOUNT = frozenset({"app_name", "recipient", "requested_at"})
_NEW_DEVICE = frozenset(
    {"app_name", "recipient", "device", "key_alg", "signed_in_at", "session_id", "check_phrase"}
)

# Template file -> the placeholders it may use.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "login_link.subject.txt": _LOGIN_LINK - {"link"},
    "login_link.txt": _LOGIN_LINK,
    "login_link.html": _LOGIN_LINK | {"qr_src", "qr_size"},
    "no_account.subject.txt": _NO_ACCOUNT,
    "no_account.txt": _NO_ACCOUNT,
    "new_device.subject.txt": _NEW_DEVICE,
    "new_device.txt": _NEW_DEVICE,
    "new_device.html": _NEW_DEVICE,
}
# A login mail without its link, or a notice without the device, would be useless.
_REQUIRED: dict[str, frozenset[str]] = {
    "login_link.txt": frozenset({"link"}),
    "login_link.html": frozenset({"link"}),
    "new_device.txt": frozenset({"device", "signed_in_at"}),
    "new_device.html": frozenset({"device", "signed_in_at"}),
}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class MailTemplates:
    templates: dict[str, Template]

    @classmethod
    def load(cls, override_dir: Path | None = None) -> MailTemplates:
        """The built-in templates, each replaced by a file of the same name in `override_dir`."""
        if override_dir is not None and not override_dir.is_dir():
            raise TemplateError(f"mail_templates_dir {override_dir} is not a directory")
        templates: dict[str, Template] = {}
        for name, allowed in PLACEHOLDERS.items():
            path = DEFAULT_TEMPLATES_DIR / name
            if override_dir is not None and (override_dir / name).is_file():
                path = override_dir / name
            template = Template(path.read_text(encoding="utf-8"))
            if not template.is_valid():
                raise TemplateError(f"{path}: a '$' that is not a placeholder (write '$$')")
            used = set(template.get_identifiers())
            if unknown := used - allowed:
                raise TemplateError(f"{path}: unknown placeholders {sorted(unknown)}")
            if missing := _REQUIRED.get(name, frozenset()) - used:
                raise TemplateError(f"{path}: must use {sorted(missing)}")
            # A subject's line breaks and other white space become single spaces (`subject`);
            # any other control character would be refused in every message.
            if name.endswith(".subject.txt") and has_control_character(one_line(template.template)):
                raise TemplateError(f"{path}: a control character in a subject")
            templates[name] = template
        return cls(templates)

    def text(self, name: str, values: dict[str, str]) -> str:
        return self.templates[name].substitute(values)

    def html(self, name: str, values: dict[str, str]) -> str:
        escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
        return self.templates[name].substitute(escaped)

    def subject(self, name: str, values: dict[str, str]) -> str:
        return one_line(self.text(name, values))
