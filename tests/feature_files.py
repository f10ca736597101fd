"""Feature files as tools/extract_features.py writes them, from hand-made features (importable:
pytest puts tests/ on sys.path)."""

import numpy as np


def write_features(path, features, labels, classes, prefix="v"):
    np.savez(
        path,
        features=np.asarray(features, np.float32),
        labels=np.asarray(labels, np.int64),
        videos=np.asarray([f"/data/{prefix}{i:03d}.mp4" for i in range(len(labels))]),
        classes=np.asarray(classes),
    )
    return path


def clusters(n_per_class, num_classes, dim=8, seed=0):
    """Well separated Gaussian blobs: class c around 10 * e_c."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    centres = 10 * np.eye(num_classes, dim)
    return centres[labels] + rng.normal(0, 1, (len(labels), dim)), labels
