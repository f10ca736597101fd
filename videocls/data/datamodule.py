"""One dataset's whole description, built by Hydra from ``configs/data/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videocls.data.annotations import FORMATS, read_annotations, read_classes
from videocls.data.augment import RandAugment, RandomErasing, RandomResizedCrop
from videocls.data.dataset import VideoClipDataset
from videocls.data.gpu_transforms import DeferredTransform
from videocls.data.sampling import ClipSampler
from videocls.data.transforms import ClipTransform


@dataclass
class VideoData:
    """Where the annotations are, how clips are sampled and augmented, and loader sizes.

    ``mean``/``std`` left as ``None`` take the model's own normalisation. ``synthetic`` (a dict
    of ``generate_dataset`` arguments) makes ``prepare()`` generate the built-in dataset at
    ``root`` when it is not there yet.

    Sizes and counts are checked when it is built (``data.num_frames=0`` is refused here,
    naming the key, not at the first batch); annotation labels are checked against
    ``num_classes``, and a class list against its length, when a dataset is read.
    """

    train_list: str
    val_list: str
    num_classes: int
    root: str | None = None
    classes: str | None = None
    format: str = "list"  # list | kinetics_csv | ssv2 | multilabel (videocls.data.annotations)
    batch_size: int = 8
    num_workers: int = 4
    backend: str = "auto"
    decode_threads: int = 1
    num_frames: int = 8
    sampling_rate: int = 8
    sampling_mode: str = "clip"
    target_fps: float | None = None
    pad: str = "repeat"
    train_short_side: tuple[int, int] = (256, 320)
    train_scale_inverse_uniform: bool = False  # PySlowFast DATA.INV_UNIFORM_SAMPLE (SSv2 recipes)
    train_crop: int = 224
    test_short_side: int = 256
    test_crop: int = 256
    flip: bool = True
    train_crop_scale: tuple[float, float] | None = None  # RandomResizedCrop area range, e.g. [0.08, 1]
    train_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rand_augment: str | None = None  # timm-style, e.g. "rand-m9-mstd0.5-inc1"
    erase_prob: float = 0.0
    erase_mode: str = "pixel"
    erase_count: int = 1
    mixup: dict | None = None  # Mixup/CutMix arguments (videocls.data.mix.Mixup); the trainer applies it
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    max_retries: int = 10
    class_balanced: bool = False  # training draws every class equally often (with replacement)
    # Repeated augmentation: k clips per training video from one decode (VideoClipDataset).
    # batch_size stays in videos, so a step holds batch_size * k clips and the LR scaling
    # (by videos, as VideoMAE's num_sample) is unchanged.
    clips_per_video: int = 1
    # true: the k clips are k augmentations of one temporal sample (VideoMAE's num_sample);
    # false: each clip samples its own frames too (MAE-ST's repeat_aug).
    clips_share_frames: bool = False
    synthetic: dict | None = None
    gpu_transforms: bool = False  # uint8 from the workers, transforms on the device (dataset(on_device=True))
    gpu_resize_short: int | None = None  # with gpu_transforms: workers shrink larger frames to it

    def __post_init__(self) -> None:
        minimum = {
            "num_classes": 1, "batch_size": 1, "num_frames": 1, "sampling_rate": 1, "num_workers": 0,
            "decode_threads": 1, "max_retries": 0, "train_crop": 1, "test_crop": 1, "test_short_side": 1,
            "clips_per_video": 1,
        }
        for key, low in minimum.items():
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"data.{key} must be an integer >= {low}, got {value!r}")
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.format!r}")

    def prepare(self) -> None:
        """Create what the dataset needs on disk (only the built-in dataset is generated)."""
        if self.synthetic is not None:
            from videocls.data.synthetic import generate_dataset

            generate_dataset(self.root, **self.synthetic)

    def class_names(self) -> list[str]:
        if self.classes is not None and Path(self.classes).is_file():
            return self._class_list()
        return [str(i) for i in range(self.num_classes)]

    def _class_list(self) -> list[str] | None:
        """The names of ``classes``, which must number ``num_classes``: a longer or shorter
        list gives the model a head that does not match the names it reports."""
        if self.classes is None:
            return None
        names = read_classes(self.classes)
        if len(names) != self.num_classes:
            raise ValueError(
                f"{self.classes}: the class list has {len(names)} names but data.num_classes="
                f"{self.num_classes}; make them agree"
            )
        return names

    def dataset(
        self,
        split: str,
        *,
        train: bool,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        pathway_alpha: int | None = None,
        num_clips: int = 1,
        num_crops: int = 1,
        seed: int = 0,
        frame_filter=None,
        on_device: bool = False,
    ) -> VideoClipDataset:
        """``split`` is ``"train"`` or ``"val"``; ``train`` picks random vs test-view sampling.

        ``mean``, ``std`` and ``pathway_alpha`` (SlowFast's frame ratio: clips become ``[slow,
        fast]``) are the model's: pass ``**model_input(model)``. The data config never carries
        them, so any ``model=X data=Y`` pair fits. ``on_device``: the caller finishes the batches
        on its device (``gpu_transforms.device_transform_of``), so with ``gpu_transforms`` the
        workers ship uint8 (:class:`~videocls.data.gpu_transforms.DeferredTransform`).
        """
        annotation = {"train": self.train_list, "val": self.val_list}[split]
        records = read_annotations(annotation, self.format, root=self.root, classes=self._class_list(),
                                   num_classes=self.num_classes)
        if train:
            transform = self._train_transform(self._mean(mean), self._std(std))
        else:
            transform = self.test_transform(mean, std)
        if on_device and self.gpu_transforms:
            # With clips_per_video=k each of an item's k clips is its own payload (the CPU path's
            # draws, clip for clip); the collate flattens them into batch_size * k rows.
            transform = DeferredTransform(base=transform, resize_short=self.gpu_resize_short,
                                          pathway_alpha=pathway_alpha)
            pathway_alpha = None  # the device cuts the pathways, after its transform
        return VideoClipDataset(
            records, self.sampler(), transform, train=train, num_clips=num_clips, num_crops=num_crops,
            backend=self.backend, num_threads=self.decode_threads, slowfast_alpha=pathway_alpha,
            max_retries=self.max_retries, seed=seed, frame_filter=frame_filter,
            num_classes=self.num_classes if self.format == "multilabel" else None,
            clips_per_video=self.clips_per_video if train else 1, share_frames=self.clips_share_frames,
        )

    def sampler(self) -> ClipSampler:
        """Which frames make a clip, in training and test alike."""
        return ClipSampler(self.num_frames, self.sampling_rate, self.sampling_mode, self.target_fps, self.pad)

    def test_transform(self, mean: tuple[float, float, float],
                       std: tuple[float, float, float]) -> ClipTransform:
        """Short-side resize and crop of the test views; ``mean``/``std`` are the model's, used
        unless the data config sets its own."""
        side = self.test_short_side
        return ClipTransform(crop_size=self.test_crop, min_short_side=side, max_short_side=side,
                             mean=self._mean(mean), std=self._std(std), train=False)

    def _train_transform(self, mean, std) -> ClipTransform:
        lo, hi = self.train_short_side
        resized_crop = (
            RandomResizedCrop(self.train_crop, tuple(self.train_crop_scale), tuple(self.train_crop_ratio))
            if self.train_crop_scale is not None else None
        )
        fill = tuple(min(255, round(255 * m)) for m in mean)
        rand_augment = RandAugment.from_string(self.rand_augment, fill=fill) if self.rand_augment else None
        erasing = (
            RandomErasing(self.erase_prob, mode=self.erase_mode, max_count=self.erase_count)
            if self.erase_prob > 0 else None
        )
        return ClipTransform(
            crop_size=self.train_crop, min_short_side=lo, max_short_side=hi, mean=mean, std=std, train=True,
            flip=self.flip, resized_crop=resized_crop, rand_augment=rand_augment, erasing=erasing,
            inverse_uniform_scale=self.train_scale_inverse_uniform,
        )

    def _mean(self, model_mean):
        return tuple(self.mean) if self.mean is not None else tuple(model_mean)

    def _std(self, model_std):
        return tuple(self.std) if self.std is not None else tuple(model_std)


def model_input(model) -> dict:
    """What the data side asks of a built model: its normalisation (``model.default_config``)
    and, for a two-pathway model, its own ``alpha`` (a ``model.alpha`` override included).
    Keyword arguments of :meth:`VideoData.dataset`; read by duck typing, so ``data`` imports
    nothing from ``models``."""
    config = model.default_config
    return {"mean": tuple(config.mean), "std": tuple(config.std),
            "pathway_alpha": getattr(model, "alpha", None)}
