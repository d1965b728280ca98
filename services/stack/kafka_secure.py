"""`driftloop stack up --secure`: the local broker with one SASL_SSL listener, for real.

* TLS: a throw-away CA and a broker certificate for 127.0.0.1 / localhost, made with
  `openssl`; the broker reads a PKCS12 keystore (written by openssl 3, which Java 17
  reads) and a truststore made by `keytool` (its own certificate is checked on the
  broker-to-broker connection).
* SASL: SCRAM-SHA-512 and SCRAM-SHA-256 users (`driftloop` for the services and the CLI,
  `admin` for the broker itself) are written into the KRaft metadata when the storage is
  formatted (`--add-scram`); PLAIN is enabled too, with the same users, because librdkafka
  2.0 (Debian's `kcat`) cannot do SCRAM against Kafka 4.
* The client listener is SASL_SSL only: no plaintext client port. (The controller
  listener stays PLAINTEXT on 127.0.0.1: only the broker itself talks to it.)

Passwords are random, written to files readable by the owner only, and recorded in the
stack state by path (`kafka_sasl_password_file`), never by value.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.stack.errors import StackError, ToolMissingError

__all__ = ["SecureBroker", "client_settings", "prepare", "scram_arguments", "secure_properties"]

CLIENT_USER = "driftloop"
ADMIN_USER = "admin"


@dataclass(frozen=True)
class SecureBroker:
    directory: Path
    ca_cert: Path
    keystore: Path
    truststore: Path
    store_password: str
    admin_password: str
    client_password: str
    client_password_file: Path


def _run(*args: str) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"`{args[0]} {args[1]}` failed:\n{(proc.stdout + proc.stderr)[-1500:]}")


def _secret(path: Path) -> str:
    if path.is_file():
        return path.read_text().strip()
    value = secrets.token_hex(16)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def prepare(directory: Path) -> SecureBroker:
    """Certificates, stores and passwords in `directory` (made once, kept across restarts)."""
    for tool, package in (("openssl", "openssl"), ("keytool", "a JDK 17+")):
        if shutil.which(tool) is None:
            raise ToolMissingError(
                tool, "to make the secure broker's certificates", f"Install {package}."
            )
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    store_password = _secret(directory / "store.password")
    admin_password = _secret(directory / "admin.password")
    client_file = directory / "driftloop.password"
    client_password = _secret(client_file)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "broker.key", directory / "broker.csr", directory / "broker.crt"
    keystore, truststore = directory / "broker.p12", directory / "truststore.p12"
    if not keystore.is_file():
        _run(
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            "-subj", "/CN=driftloop local CA", "-keyout", str(ca_key), "-out", str(ca_cert),
        )  # fmt: skip
        _run(
            "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        extensions = directory / "san.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _run(
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
            str(ca_key), "-CAcreateserial", "-days", "3650", "-extfile", str(extensions),
            "-out", str(cert),
        )  # fmt: skip
        truststore.unlink(missing_ok=True)
        _run(
            "keytool", "-importcert", "-noprompt", "-alias", "driftloop-ca", "-file",
            str(ca_cert), "-keystore", str(truststore), "-storetype", "PKCS12",
            "-storepass", store_password,
        )  # fmt: skip
        _run(
            "openssl", "pkcs12", "-export", "-in", str(cert), "-inkey", str(key),
            "-certfile", str(ca_cert), "-name", "broker", "-out", str(keystore),
            "-passout", f"pass:{store_password}",
        )  # fmt: skip
    return SecureBroker(
        directory,
        ca_cert,
        keystore,
        truststore,
        store_password,
        admin_password,
        client_password,
        client_file,
    )


def secure_properties(port: int, controller_port: int, tls: SecureBroker) -> dict[str, str]:
    """What replaces the PLAINTEXT client listener in server.properties."""
    plain_users = (
        f'user_{ADMIN_USER}="{tls.admin_password}" user_{CLIENT_USER}="{tls.client_password}"'
    )
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{ADMIN_USER}" password="{tls.admin_password}" {plain_users};'
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.keystore.password": tls.store_password,
        "ssl.key.password": tls.store_password,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(tls.truststore),
        "ssl.truststore.password": tls.store_password,
        "ssl.client.auth": "none",
    }


def scram_arguments(tls: SecureBroker) -> list[str]:
    """`StorageTool format` arguments that create the SCRAM users."""
    args = []
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        for user, password in (
            (CLIENT_USER, tls.client_password),
            (ADMIN_USER, tls.admin_password),
        ):
            args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return args


def client_settings(tls: SecureBroker) -> dict[str, str]:
    """The settings (stack state keys) a client needs for this broker; no secret value."""
    return {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": CLIENT_USER,
        "kafka_sasl_password_file": str(tls.client_password_file),
        "kafka_ssl_cafile": str(tls.ca_cert),
    }
