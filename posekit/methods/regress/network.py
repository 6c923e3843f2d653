"""The network: torchvision's Mask R-CNN over an FPN on the shared pretrained backbone, plus Deep-6DPose's pose branch.

Parts, as torchvision builds its detectors: :class:`LiteFPN` (the pretrained EfficientNet-Lite0's s8 / s16 / s32
maps through torchvision's ``FeaturePyramidNetwork``), torchvision's ``MaskRCNN`` for the RPN, boxes, classes and
masks, and :class:`PoseBranch` on ``MultiScaleRoIAlign`` features of the same pyramid.

Pose parametrisation (per RoI, class-specific outputs, Do et al. 2018 section 3): the rotation is an so(3) vector
``w`` of the *allocentric* rotation ``R_allo = R_ray^T R`` (the view the RoI shows, the same anywhere in the image;
``R_ray`` turns the optical axis onto the ray through the object's projected centre), the translation is the
projected centre relative to the RoI, ``du = (u - box_cx) / box_w``, ``dv = (v - box_cy) / box_h``, and the depth
normalised by the RoI's size, ``dz = log(z * max(box_w, box_h) / (f * diameter))``. All three hold anywhere in
the image and at any scale; :func:`decode_pose` turns them back into (R, t) in the camera of the image.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posekit.features.backbone import Backbone
from posekit.geometry.rotations import so3_exp
from posekit.methods.regress.presets import RegressPreset
from posekit.render.views import align_optical_axis

MAPS = ("s8", "s16", "s32")


class LiteFPN(nn.Module):
    """The pretrained backbone's s8, s16 and s32 maps through an FPN (plus a max-pooled level): torchvision's
    backbone interface (``out_channels``, an OrderedDict of maps)."""

    def __init__(self, width: int, freeze: str | None) -> None:
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        super().__init__()
        self.body = Backbone(freeze=freeze)
        self.fpn = FeaturePyramidNetwork([Backbone.channels(m) for m in MAPS], width, extra_blocks=LastLevelMaxPool())
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> OrderedDict:
        f = self.body(x, MAPS)
        return self.fpn(OrderedDict((str(i), f[m]) for i, m in enumerate(MAPS)))


class PoseBranch(nn.Module):
    """Deep-6DPose's pose head: RoI features -> two FC layers -> 6 numbers per class (w, du, dv, dz)."""

    def __init__(self, in_channels: int, width: int, num_classes: int) -> None:
        from torchvision.ops import MultiScaleRoIAlign

        super().__init__()
        self.pool = MultiScaleRoIAlign(["0", "1", "2"], 7, 2)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 49, width), nn.ReLU(inplace=True),
                                nn.Linear(width, width), nn.ReLU(inplace=True))
        self.out = nn.Linear(width, 6 * num_classes)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)
        self.num_classes = num_classes

    def forward(self, feats: OrderedDict, rois: list[torch.Tensor], image_sizes, labels: torch.Tensor) -> torch.Tensor:
        """(N, 6) for the N RoIs (x0, y0, x1, y1 per image) of classes ``labels`` (N,) (1-based, 0 = background)."""
        x = self.fc(self.pool(feats, rois, image_sizes))
        out = self.out(x).view(-1, self.num_classes, 6)
        return out[torch.arange(out.shape[0], device=out.device), labels.clamp_min(1) - 1]


class PoseRCNN(nn.Module):
    """Mask R-CNN + pose branch for ``num_objects`` objects (labels 1..num_objects)."""

    def __init__(self, preset: RegressPreset, num_objects: int) -> None:
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
        from torchvision.models.detection.rpn import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign

        super().__init__()
        W, H = preset.image_size
        c = preset.fpn
        n = num_objects + 1
        base = max(8, min(W, H) // 16)  # anchors from ~1/16 to ~1/2 of the image's shorter side
        anchors = AnchorGenerator(sizes=tuple((base * 2**i,) for i in range(4)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
        self.detector = MaskRCNN(
            LiteFPN(c, preset.freeze), num_classes=None, min_size=H, max_size=W,
            image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],  # the backbone normalises inside
            rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=2 * preset.rpn_post_nms_train, rpn_post_nms_top_n_train=preset.rpn_post_nms_train,
            rpn_pre_nms_top_n_test=3 * preset.rpn_post_nms_test, rpn_post_nms_top_n_test=preset.rpn_post_nms_test,
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2), box_head=TwoMLPHead(c * 49, preset.box_head),
            box_predictor=FastRCNNPredictor(preset.box_head, n), box_batch_size_per_image=preset.box_batch_per_image,
            box_score_thresh=0.05, box_detections_per_img=50,
            mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 14, 2),
            mask_head=MaskRCNNHeads(c, (preset.mask_head, preset.mask_head), 1),
            mask_predictor=MaskRCNNPredictor(preset.mask_head, preset.mask_head, n),
        )
        self.pose = PoseBranch(c, preset.pose_head, num_objects)
        self.num_objects = num_objects

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """Training (``targets`` given): a dict of losses, the pose branch's under ``loss_pose_*`` (its RoIs and
        targets come from ``targets[i]["pose_rois"]`` / ``["pose_labels"]`` / ``["pose_targets"]``, in the
        original image's pixels). Inference: per image a dict of boxes, labels, scores, masks and ``pose`` (N, 6)."""
        d = self.detector
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        images_t, targets_t = d.transform(images, targets)
        feats = d.backbone(images_t.tensors)
        proposals, rpn_losses = d.rpn(images_t, feats, targets_t)
        detections, roi_losses = d.roi_heads(feats, proposals, images_t.image_sizes, targets_t)
        scales = [torch.tensor([(s[1] / o[1]), (s[0] / o[0])] * 2, device=images_t.tensors.device)
                  for s, o in zip(images_t.image_sizes, original_sizes, strict=True)]
        if targets is not None:
            rois = [t["pose_rois"] * k for t, k in zip(targets, scales, strict=True)]
            labels = torch.cat([t["pose_labels"] for t in targets])
            out = self.pose(feats, rois, images_t.image_sizes, labels) if len(labels) else None
            return {**rpn_losses, **roi_losses, **pose_losses(out, targets, self)}
        rois = [det["boxes"] for det in detections]
        labels = torch.cat([det["labels"] for det in detections]) if detections else torch.zeros(0, dtype=torch.long)
        pose = self.pose(feats, rois, images_t.image_sizes, labels) if len(labels) else torch.zeros(0, 6)
        detections = d.transform.postprocess(detections, images_t.image_sizes, original_sizes)
        counts = [len(det["boxes"]) for det in detections]
        for det, p in zip(detections, pose.split(counts), strict=True):
            det["pose"] = p
        return detections

    # the symmetry-aware rotation loss needs each class's model points and symmetries
    def set_objects(self, points: torch.Tensor, symmetries: torch.Tensor) -> None:
        """points (K, P, 3) model points / diameter; symmetries (K, S, 3, 3) rotations (identity first, padded with
        identities)."""
        self.register_buffer("points", points.float(), persistent=False)
        self.register_buffer("symmetries", symmetries.float(), persistent=False)


def pose_losses(out: torch.Tensor | None, targets: list[dict], net: PoseRCNN) -> dict[str, torch.Tensor]:
    """Rotation: mean distance of the class's model points (in diameters) under the predicted and the true
    allocentric rotations, the minimum over the object's symmetries; translation: smooth L1 on (du, dv, dz)."""
    if out is None:
        zero = net.pose.out.weight.sum() * 0.0
        return {"loss_pose_rot": zero, "loss_pose_trans": zero}
    labels = torch.cat([t["pose_labels"] for t in targets]) - 1
    goal = torch.cat([t["pose_targets"] for t in targets])  # (N, 12): R_allo (9), du, dv, dz
    R_pred = so3_exp(out[:, :3])
    R_gt = goal[:, :9].view(-1, 3, 3)
    pts = net.points[labels]  # (N, P, 3)
    syms = net.symmetries[labels]  # (N, S, 3, 3)
    p_pred = pts @ R_pred.transpose(1, 2)  # (N, P, 3)
    p_gt = torch.einsum("npj,nsij,nki->nspk", pts, syms, R_gt)  # R_gt S p for every symmetry S
    d = (p_pred[:, None] - p_gt).norm(dim=-1).mean(-1)  # (N, S)
    return {"loss_pose_rot": d.min(1).values.mean(),
            "loss_pose_trans": F.smooth_l1_loss(out[:, 3:], goal[:, 9:], beta=0.1)}


def pose_targets(R: np.ndarray, t: np.ndarray, boxes: np.ndarray, K: np.ndarray, diameter: np.ndarray) -> np.ndarray:
    """(N, 12) targets of poses (N, 3, 3), (N, 3) for RoIs (N, 4: x0, y0, x1, y1) in an image of intrinsics K."""
    R_allo = np.swapaxes(align_optical_axis(t), -1, -2) @ R
    u = K[0, 0] * t[:, 0] / t[:, 2] + K[0, 2]
    v = K[1, 1] * t[:, 1] / t[:, 2] + K[1, 2]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    du = (u - 0.5 * (boxes[:, 0] + boxes[:, 2])) / bw
    dv = (v - 0.5 * (boxes[:, 1] + boxes[:, 3])) / bh
    f = 0.5 * (K[0, 0] + K[1, 1])
    dz = np.log(t[:, 2] * np.maximum(bw, bh) / (f * diameter))
    return np.concatenate([R_allo.reshape(-1, 9), np.stack([du, dv, dz], 1)], axis=1)


def decode_pose(raw: np.ndarray, boxes: np.ndarray, K: np.ndarray, diameter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R (N, 3, 3), t (N, 3) mm) from the branch's outputs (N, 6) for boxes (N, 4: x0, y0, x1, y1)."""
    raw = np.asarray(raw, dtype=np.float64).reshape(-1, 6)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    u = 0.5 * (boxes[:, 0] + boxes[:, 2]) + raw[:, 3] * bw
    v = 0.5 * (boxes[:, 1] + boxes[:, 3]) + raw[:, 4] * bh
    f = 0.5 * (K[0, 0] + K[1, 1])
    z = np.exp(raw[:, 5]) * f * diameter / np.maximum(bw, bh)
    t = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
    R = align_optical_axis(t) @ so3_exp(raw[:, :3])
    return R, t
