"""Offline identity and landmark distances with dlib, on real face photos."""

import cv2
import numpy as np
import pytest
from conftest import ALIGNED_FACES, needs_shared_data

pytestmark = needs_shared_data


def _rgb(name):
    return np.ascontiguousarray(cv2.imread(str(ALIGNED_FACES / name))[:, :, ::-1])


@pytest.fixture(scope="module")
def faces():
    return _rgb("Adele_crop.png"), _rgb("Julia_Roberts_crop.png")


def test_identity_distance(faces):
    from vqfr.metrics.identity import DlibIdentity

    ident = DlibIdentity()
    adele, julia = faces
    assert ident.distance(adele, adele) == (0.0, 0.0)
    angle, l2 = ident.distance(julia, adele)
    assert angle > 15 and l2 > 0.5  # two different people (dlib: >= 0.6 usually means different)
    blurred = cv2.GaussianBlur(adele, (0, 0), 2)
    angle_blur, _ = ident.distance(blurred, adele)
    assert 0 < angle_blur < angle  # same person, degraded: closer than a different person


def test_landmark_distance(faces):
    from vqfr.metrics.landmarks import DlibLandmarks

    lm = DlibLandmarks()
    adele, julia = faces
    assert lm.distance(adele, adele) == 0.0
    shifted = np.ascontiguousarray(np.pad(adele, ((0, 0), (6, 0), (0, 0)), mode="edge")[:, :-6])
    assert lm.distance(shifted, adele) == pytest.approx(6.0, abs=2.0)  # face moved 6 px right
    assert lm.distance(julia, adele) > lm.distance(shifted, adele)
