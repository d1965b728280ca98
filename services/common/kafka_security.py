"""How every Kafka client of driftloop authenticates: one factory for all of them.

`client_options(settings)` gives the keyword arguments that aiokafka's producer, consumer
and admin client take (`security_protocol`, `ssl_context`, `sasl_*`); the factories in
`kafka.py` and `kafka_admin.py` pass them to every client they build, and
`faust_credentials(settings)` turns the same settings into faust's `broker_credentials`
(faust builds its own aiokafka clients from them). So a service, the CLI and the monitor
reach a SASL_SSL / mTLS cluster with nothing but `DRIFTLOOP_KAFKA_*` settings.

Secrets (the SASL password, the key password) come from the environment or from a file
(`DRIFTLOOP_KAFKA_SASL_PASSWORD_FILE`, as a Kubernetes secret is mounted); they are held
as `SecretStr` and never logged: `describe(settings)` is what may be printed.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

from services.common.settings import Settings, SettingsError

__all__ = [
    "client_options",
    "describe",
    "faust_app_options",
    "faust_credentials",
    "sasl_password",
    "ssl_context",
]


def sasl_password(settings: Settings) -> str | None:
    """The SASL password: DRIFTLOOP_KAFKA_SASL_PASSWORD, else the file it names."""
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    path = settings.kafka_sasl_password_file
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"DRIFTLOOP_KAFKA_SASL_PASSWORD_FILE: cannot read {path} ({exc.strerror})"
        ) from None


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context for SSL / SASL_SSL (None for the plaintext protocols)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            raise SettingsError(f"DRIFTLOOP_{name.upper()}: {path} is not a file")
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        raise SettingsError(
            "DRIFTLOOP_KAFKA_SSL_CERTFILE and DRIFTLOOP_KAFKA_SSL_KEYFILE go together (mTLS)"
        )
    key_password = settings.kafka_ssl_key_password
    try:
        return create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=key_password.get_secret_value() if key_password else None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"the Kafka TLS files cannot be loaded: {exc}") from None


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL"):
        if settings.kafka_sasl_mechanism is None or settings.kafka_sasl_username is None:
            raise SettingsError(
                f"DRIFTLOOP_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                "DRIFTLOOP_KAFKA_SASL_MECHANISM and DRIFTLOOP_KAFKA_SASL_USERNAME"
            )
        password = sasl_password(settings)
        if password is None:
            raise SettingsError(
                f"DRIFTLOOP_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                "DRIFTLOOP_KAFKA_SASL_PASSWORD or DRIFTLOOP_KAFKA_SASL_PASSWORD_FILE"
            )
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password,
        )
    return options


def faust_credentials(settings: Settings) -> Any:
    """faust's `broker_credentials` for the same settings (None: plaintext)."""
    from faust.auth import SASLCredentials, SSLCredentials

    options = client_options(settings)
    protocol = options["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(options["ssl_context"])
    credentials = SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=options.get("ssl_context"),
        mechanism=options["sasl_mechanism"],
    )
    return credentials


def faust_app_options(settings: Settings) -> dict[str, Any]:
    """`faust.App(name, **faust_app_options(settings), …)`: the brokers and how to reach
    them. (faust's worker consumer reads `read_committed` only with
    `processing_guarantee="exactly_once"`; set that on an app that must not see aborted
    transactions.)"""
    return {
        "broker": [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap.split(",")],
        "broker_credentials": faust_credentials(settings),
    }


def describe(settings: Settings) -> str:
    """How Kafka is reached, safe to print (no secret)."""
    protocol = settings.kafka_security_protocol
    parts = [f"{protocol}://{settings.kafka_bootstrap}"]
    if protocol.startswith("SASL"):
        parts.append(f"{settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username!r}")
    if settings.kafka_ssl_cafile:
        parts.append(f"CA {settings.kafka_ssl_cafile}")
    if settings.kafka_ssl_certfile:
        parts.append(f"client certificate {settings.kafka_ssl_certfile}")
    return ", ".join(parts)
