"""The e-mail channel: compose a notice as a MIME message and hand it to an SMTP server.

Every header is built from a validated value: addresses are checked against a strict syntax,
names and subjects must be one line (a CR or LF can never start a new header), and non-ASCII
names go out as RFC 2047 encoded words. An internationalised address goes out with its domain in
ASCII (punycode); one whose local part is not ASCII needs a server that offers SMTPUTF8. Server
replies are sorted into permanent failures (5xx, a refused login, an untrusted certificate:
retrying cannot help) and transient ones (4xx, connection trouble), so the caller knows whether
Temporal should try again.
"""

from __future__ import annotations

import functools
import hashlib
import re
import ssl
import unicodedata
from datetime import datetime, timezone
from email import policy
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal

import aiosmtplib
import email_validator
from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator

from activities.notices.render import RenderedNotice

_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62}$")
_CONTENT_TYPE = re.compile(r"^[a-z]+/[A-Za-z0-9.+-]+$")
_MESSAGE_ID = re.compile(r"^<[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+>$")


class _ReusedHeaderClasses(HeaderRegistry):
    """The standard header registry, building each header's class once.

    The standard one builds a new class for every header it creates; classes are freed only by the
    cyclic garbage collector, which a busy worker runs rarely: every message left about 100 KB
    behind until then.
    """

    @functools.cache  # noqa: B019 - one registry per process: the cache lives as long as it does
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


MESSAGE_POLICY = policy.default.clone(header_factory=_ReusedHeaderClasses())


class SmtpDeliveryError(Exception):
    """The SMTP server did not take the message; ``permanent`` says whether a retry could help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class SmtpConfig(BaseModel):
    """Where and how e-mail is sent.

    ``security``: ``tls`` connects with TLS from the first byte (port 465), ``starttls`` upgrades
    a plain connection and refuses a server that does not offer it (port 587), ``none`` sends in
    clear (a local relay). The server certificate is verified against ``ca_file`` when given,
    else against the system CAs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    security: Literal["none", "starttls", "tls"] = "starttls"
    ca_file: FilePath | None = None
    timeout: float = Field(default=30.0, gt=0, description="seconds for each step of the SMTP dialogue")

    @model_validator(mode="after")
    def _credentials_need_tls(self) -> SmtpConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both an SMTP username and a password, or neither")
        if self.username is not None and self.security == "none":
            raise ValueError("SMTP credentials are never sent in clear: use security 'starttls' or 'tls'")
        return self

    def tls_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against ``ca_file`` or the system CAs."""
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


def message_id_for(idempotency_key: str, sender: str) -> str:
    """A stable Message-ID derived from the workflow and step: every retry of a step carries the same one."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{sender.rpartition('@')[2] or 'dunning.invalid'}>"


def checked_address(address: str) -> str:
    """``address`` as it goes into a header and an SMTP command, else ``ValueError``.

    Stricter than RFC 5322 on purpose: no quoted local parts, comments or display names, so
    nothing but an address can reach a header or an SMTP command. Reserved domains such as
    ``.invalid`` are allowed (our own sender may use one in development). A plain ASCII
    ``local@domain.tld`` is returned as is; an internationalised one (RFC 6531, checked by
    ``email_validator``) with its domain in ASCII, so only a non-ASCII local part is left that
    needs SMTPUTF8.
    """
    local, at, domain = address.rpartition("@")
    if at and len(address) <= 254 and _LOCAL_PART.match(local) and len(local) <= 64 and _DOMAIN.match(domain):
        return address
    try:
        valid = email_validator.validate_email(address, check_deliverability=False, globally_deliverable=False)
    except email_validator.EmailNotValidError as err:
        raise ValueError(f"not a valid e-mail address: {address!r} ({err})") from None
    return f"{valid.local_part}@{valid.ascii_domain}"


def one_line(value: str, what: str) -> str:
    """``value`` if it cannot break out of its header (no CR, LF or other control characters)."""
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise ValueError(f"{what} must be one line without control characters: {value!r}")
    return value


def compose_email(
    rendered: RenderedNotice,
    sender: str,
    to_name: str | None,
    to_email: str,
    message_id: str,
    step_key: str,
) -> EmailMessage:
    """The notice as multipart/alternative text and HTML, inside multipart/mixed when it has attachments.

    Raises ``ValueError`` when any value would not make a safe header.
    """
    if not _MESSAGE_ID.match(message_id):
        raise ValueError(f"not a valid Message-ID: {message_id!r}")
    display_name = one_line(to_name, "the recipient's name") if to_name else ""
    message = EmailMessage(policy=MESSAGE_POLICY)
    message["Subject"] = one_line(rendered.subject, "the subject")
    message["From"] = _header_address("", sender)
    message["To"] = _header_address(display_name, to_email)
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = message_id
    message["X-Dunning-Step"] = one_line(step_key, "the step key")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    for attachment in rendered.attachments:
        if not _CONTENT_TYPE.match(attachment.content_type):
            raise ValueError(f"not a valid content type: {attachment.content_type!r}")
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=one_line(attachment.filename, "an attachment's file name"),
        )
    return message


def _header_address(display_name: str, address: str) -> Address:
    # given in parts, not parsed again: the standard parser refuses a non-ASCII local part even
    # where SMTPUTF8 carries it (the message is then written out in UTF-8)
    local, _, domain = checked_address(address).rpartition("@")
    return Address(display_name=display_name, username=local, domain=domain)


async def send_email(config: SmtpConfig, message: EmailMessage, sender: str, recipient: str) -> None:
    """Hand ``message`` to the server for ``recipient``; ``SmtpDeliveryError`` when it is not taken.

    An address with a non-ASCII local part is sent with SMTPUTF8; a server that does not offer it
    is a permanent failure."""
    sender, recipient = checked_address(sender), checked_address(recipient)
    try:
        await aiosmtplib.send(
            message,
            sender=sender,
            recipients=[recipient],
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=config.tls_context() if config.security != "none" else None,
            timeout=config.timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as err:
        codes = [refused.code for refused in err.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in err.recipients)
        raise SmtpDeliveryError(f"recipient refused: {detail}", permanent=all(c >= 500 for c in codes)) from err
    except aiosmtplib.SMTPAuthenticationError as err:
        raise SmtpDeliveryError(f"SMTP login refused: {err.code} {err.message}", permanent=err.code >= 500) from err
    except aiosmtplib.SMTPResponseException as err:
        raise SmtpDeliveryError(f"SMTP server replied {err.code} {err.message}", permanent=err.code >= 500) from err
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as err:
        if isinstance(err.__cause__, ssl.SSLCertVerificationError):
            raise SmtpDeliveryError(f"SMTP server certificate not trusted: {err.__cause__}", permanent=True) from err
        raise SmtpDeliveryError(f"SMTP server unreachable: {err}", permanent=False) from err
    except ssl.SSLCertVerificationError as err:
        raise SmtpDeliveryError(f"SMTP server certificate not trusted: {err}", permanent=True) from err
    except aiosmtplib.SMTPException as err:
        if isinstance(err, aiosmtplib.SMTPNotSupported) and not (sender + recipient).isascii():
            raise SmtpDeliveryError(
                f"the address {recipient} needs SMTPUTF8 (its local part is not ASCII), which the SMTP server"
                " does not offer",
                permanent=True,
            ) from err
        # STARTTLS or AUTH not offered, and the like: the server is not what the settings say
        raise SmtpDeliveryError(f"SMTP server unfit for the settings: {err}", permanent=True) from err
    except OSError as err:
        raise SmtpDeliveryError(f"SMTP connection failed: {err}", permanent=False) from err
