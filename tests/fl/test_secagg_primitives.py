"""The building blocks of SecAgg+: Shamir sharing, X25519/HKDF, AES-GCM, the mask PRG,
quantisation modulo 2**bits and the neighbour graph."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbus.errors import InvalidArgumentError
from fedbus.fl.secagg.crypto import KeyPair, agree, decrypt, encrypt, mask
from fedbus.fl.secagg.graph import default_degree, default_threshold, neighbour_graph
from fedbus.fl.secagg.quantize import Quantizer
from fedbus.fl.secagg.shamir import PRIME, SHARE_BYTES, combine_shares, split_secret


# -- Shamir ---------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(1, 8), st.integers(0, 4), st.randoms())
def test_any_threshold_shares_rebuild_the_secret(
    secret: bytes, threshold: int, extra: int, rng: random.Random
) -> None:
    ids = rng.sample(range(1, 1000), threshold + extra)
    shares = split_secret(secret, threshold, ids)
    assert all(len(share) == SHARE_BYTES for share in shares.values())
    chosen = dict(rng.sample(sorted(shares.items()), threshold))
    assert combine_shares(chosen, threshold, len(secret)) == secret


def test_fewer_shares_than_the_threshold_fit_every_secret() -> None:
    """t - 1 shares say nothing: for any other secret some polynomial passes through them."""
    shares = split_secret(b"the real secret", 3, [1, 2, 3, 4], rng=random.Random(0))
    known = {1: shares[1], 2: shares[2]}
    with pytest.raises(InvalidArgumentError, match="2 shares cannot rebuild"):
        combine_shares(known, 3, 15)
    other = int.from_bytes(b"another secret!", "big")
    # the degree-2 polynomial through (0, other), (1, y1), (2, y2) exists: it gives share 3
    y1, y2 = (int.from_bytes(known[i], "big") for i in (1, 2))
    a = (y2 - 2 * y1 + other) * pow(2, -1, PRIME) % PRIME
    b = (y1 - other - a) % PRIME
    forged = {**known, 3: ((other + 3 * b + 9 * a) % PRIME).to_bytes(SHARE_BYTES, "big")}
    assert combine_shares(forged, 3, 15) == b"another secret!"


def test_shamir_refuses_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="at most 64 bytes"):
        split_secret(bytes(65), 2, [1, 2])
    with pytest.raises(InvalidArgumentError, match=r"threshold must be in 1\.\.2"):
        split_secret(b"x", 3, [1, 2])
    with pytest.raises(InvalidArgumentError, match="distinct"):
        split_secret(b"x", 1, [1, 1])
    with pytest.raises(InvalidArgumentError, match="ints >= 1"):
        split_secret(b"x", 1, [0, 1])
    with pytest.raises(InvalidArgumentError, match="expected 66"):
        combine_shares({1: b"short"}, 1, 1)


# -- keys, encryption, masks ------------------------------------------------------------------
def test_both_parties_agree_on_a_key_and_uses_are_kept_apart() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    key = agree(alice, bob.public_bytes, info=b"one")
    assert key == agree(bob, alice.public_bytes, info=b"one")
    assert key != agree(alice, bob.public_bytes, info=b"two")
    rebuilt = KeyPair.from_private_bytes(alice.private_bytes())
    assert rebuilt.public_bytes == alice.public_bytes


def test_encryption_round_trips_and_detects_tampering() -> None:
    key = bytes(range(32))
    ciphertext = encrypt(key, b"a share", b"round 1 from 2 to 3")
    assert decrypt(key, ciphertext, b"round 1 from 2 to 3") == b"a share"
    with pytest.raises(InvalidArgumentError, match="failed authentication"):
        decrypt(key, ciphertext, b"round 1 from 2 to 4")
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    with pytest.raises(InvalidArgumentError, match="failed authentication"):
        decrypt(key, tampered, b"round 1 from 2 to 3")
    with pytest.raises(InvalidArgumentError, match="32 bytes"):
        encrypt(b"short", b"x", b"")


def test_masks_are_deterministic_in_range_and_uniform() -> None:
    seed = bytes(32)
    first = mask(seed, 100_000, 20)
    np.testing.assert_array_equal(first, mask(seed, 100_000, 20))
    assert first.dtype == np.uint64
    assert int(first.max()) < 2**20
    assert not np.array_equal(first, mask(bytes([1]) + bytes(31), 100_000, 20))
    scaled = first / 2**20
    assert abs(scaled.mean() - 0.5) < 5 * (1 / 12) ** 0.5 / len(scaled) ** 0.5
    with pytest.raises(InvalidArgumentError, match=r"bits must be in 1\.\.62"):
        mask(seed, 1, 63)


# -- quantisation -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.floats(-2, 2), min_size=5, max_size=5), min_size=1, max_size=12),
    st.integers(16, 48),
)
def test_the_sum_of_quantised_values_is_the_float_sum_within_the_bound(
    rows: list[list[float]], bits: int
) -> None:
    quantizer = Quantizer(1.0, bits, 12)
    values = np.clip(np.array(rows), -1, 1)
    total = sum(quantizer.quantize(row) for row in values)
    recovered = quantizer.dequantize_sum(np.asarray(total), len(rows))
    bound = len(rows) * quantizer.step / 2 + 1e-9
    assert np.all(np.abs(recovered - values.sum(axis=0)) <= bound)


def test_masks_that_cancel_leave_the_sum_and_rounding_can_be_unbiased() -> None:
    quantizer = Quantizer(1.0, 24, 2)
    a, b = quantizer.quantize(np.array([0.3, -0.7])), quantizer.quantize(np.array([0.1, 0.2]))
    noise = mask(bytes(32), 2, 24)
    modulus = np.uint64(2**24 - 1)
    masked = ((a + noise) & modulus) + ((b - noise) & modulus)
    np.testing.assert_allclose(
        quantizer.dequantize_sum(masked, 2), [0.4, -0.5], atol=quantizer.step
    )
    coarse = Quantizer(1.0, 4, 1)  # a step of 2/15
    draws = coarse.quantize(np.full(200_000, 0.05), rng=np.random.default_rng(0))
    assert abs(float(coarse.dequantize_sum(draws, 1).mean()) - 0.05) < 0.002
    with pytest.raises(InvalidArgumentError, match="no room to sum 1000 inputs"):
        Quantizer(1.0, 8, 1000)


# -- the neighbour graph --------------------------------------------------------------------------
@pytest.mark.parametrize(("count", "degree"), [(20, 6), (21, 5), (50, 11), (7, 10)])
def test_the_graph_is_regular_symmetric_and_seeded(count: int, degree: int) -> None:
    nodes = list(range(100, 100 + count))
    graph = neighbour_graph(nodes, degree, seed=4)
    expected = min(count - 1, degree + (degree % 2 and count % 2))
    for node, peers in graph.items():
        assert node not in peers
        assert len(peers) == expected
        assert all(node in graph[peer] for peer in peers)
    assert graph == neighbour_graph(nodes, degree, seed=4)
    if count > degree + 1:
        assert graph != neighbour_graph(nodes, degree, seed=5)


def test_default_degree_grows_with_log_n() -> None:
    assert default_degree(3) == 2
    assert default_degree(1000) == 20
    assert default_degree(100_000) == 34
    assert default_threshold(20) == 11


@pytest.mark.parametrize(("bits", "clients"), [(62, 1), (62, 2), (54, 1), (32, 10)])
def test_sums_at_the_clip_range_never_wrap_whatever_the_bits(bits: int, clients: int) -> None:
    quantizer = Quantizer(1.0, bits, clients)
    for value in (1.0, -1.0):
        total = sum(quantizer.quantize(np.array([value])) for _ in range(clients))
        recovered = quantizer.dequantize_sum(np.asarray(total), clients)
        assert abs(float(recovered[0]) - value * clients) <= clients * quantizer.step


def test_a_share_outside_the_field_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="not a field element"):
        combine_shares({1: (PRIME + 1).to_bytes(SHARE_BYTES, "big")}, 1, 1)
