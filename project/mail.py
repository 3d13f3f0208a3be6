"""Email, text and HTML, through Django's mail framework: `templates/<template>_subject.txt`, `_message.txt` and
`_message.html`. A failure is logged, never raised: callers send after their change is committed
(transaction.on_commit), and a mail outage must not turn a committed change into an error page."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


def send(*, template: str, to: str, context: dict[str, object]) -> None:
    """Send `template` (a path without suffix, e.g. "accounts/email/invitation") to one address."""
    context = {"site_name": settings.SITE_NAME, "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"{template}_subject.txt", context).strip()
    text = render_to_string(f"{template}_message.txt", context)
    html = render_to_string(f"{template}_message.html", context)
    message = EmailMultiAlternatives(subject=subject, body=text, to=[to])
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except Exception:  # the change is committed; a mail outage must not turn it into an error page
        name = template.rsplit("/", 1)[-1]
        logger.exception("could not send %s email", name, extra={"template": name})
