"""Fixtures shared by the whole suite.

``federation`` runs a server and clients on every runtime available, so each behaviour test
holds for each runtime. ``local_ray`` starts a local Ray once per session, for the tests that
need one. ``tls_files`` makes a throwaway CA and server certificate.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedbus.runtime.grpc import run_local
from fedbus.runtime.simulation import simulate
from fedbus.worker import Worker

RunFederation = Callable[[Worker, Sequence[Worker]], None]

RUNTIMES = ["simulation", "grpc"]

#: Seconds a federation over gRPC may take in a test before it counts as hung.
GRPC_TIMEOUT = 30.0


@pytest.fixture(params=RUNTIMES)
def federation(request: pytest.FixtureRequest) -> RunFederation:
    """Run ``server`` and ``clients`` to completion on one runtime."""

    def run(server: Worker, clients: Sequence[Worker]) -> None:
        if request.param == "simulation":
            simulate(server, clients, check_serialization=True)
        else:
            # Server and clients in this process, on threads, over real streams on 127.0.0.1.
            run_local(server, clients, timeout=GRPC_TIMEOUT)

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With several test processes (``make test`` runs two), every test that uses Ray runs in
    the same one, so that one local Ray is started, not one per process."""
    for item in items:
        params = getattr(item, "callspec", None)
        uses_ray = "local_ray" in getattr(item, "fixturenames", ()) or (
            params is not None
            and any(isinstance(value, str) and value == "ray" for value in params.params.values())
        )
        if uses_ray:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A local Ray with two CPUs, started once for the whole session (it takes seconds)."""
    import ray  # here, not at the top: most sessions never start Ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def load_module(path: Path, name: str) -> ModuleType:
    """Import the script at ``path`` (an example) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


# -- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that did not sign the server's certificate
    client_cert: Path  # common name "site-a", signed by ca: for mutual TLS
    client_key: Path
    stranger_cert: Path  # common name "site-a" too, but signed by other_ca
    stranger_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate_authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _leaf_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    common_name: str = "localhost",
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""
    root = tmp_path_factory.mktemp("tls")
    ca_key, ca = _certificate_authority("fedbus test CA")
    key, certificate = _leaf_certificate(ca_key, ca)
    other_key, other = _certificate_authority("another CA")
    client_key, client = _leaf_certificate(ca_key, ca, "site-a", ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger_key, stranger = _leaf_certificate(
        other_key, other, "site-a", ExtendedKeyUsageOID.CLIENT_AUTH
    )
    files = TlsFiles(
        root / "ca.pem",
        root / "server.pem",
        root / "server.key",
        root / "other.pem",
        root / "client.pem",
        root / "client.key",
        root / "stranger.pem",
        root / "stranger.key",
    )
    files.ca.write_bytes(_pem(ca))
    files.other_ca.write_bytes(_pem(other))
    for path, written in ((files.cert, certificate), (files.client_cert, client)):
        path.write_bytes(_pem(written))
    files.stranger_cert.write_bytes(_pem(stranger))
    for path, private in (
        (files.key, key),
        (files.client_key, client_key),
        (files.stranger_key, stranger_key),
    ):
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files
