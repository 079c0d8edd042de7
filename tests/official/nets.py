"""The networks of the official PyTorch codes, transcribed: the yardstick of `advjax.interop` and of the zoo's
initialisation. Each class is the official one with the unused variants left out; nothing else is changed.

- SmallCNN: zjfheart/Friendly-Adversarial-Training, models/small_cnn.py, commit 80a0640748.
- ResNet18 (kuangliu): the same repository, models/resnet.py.
- PreActResNet18, `final_bn`/`preact_shortcut` picking the official variant:
    kuangliu (final_bn=False, preact_shortcut=True): the same repository, models/preact_resnet.py; the same forward
      (read, not diffed line by line) in jiaxiaojunQAQ/FGSM-SDI models/preact_resnet.py (d54cac68b5),
      jiaxiaojunQAQ/FGSM-PGI models/preact_resnet.py (fc15cfeffd) and jiaxiaojunQAQ/LAS-AT {,LAS_AWP/,LAS_Trades/,LAS_PGD_AT/}CIFAR10_models/preact_resnet.py
      (ee756b7ef7).
    AWP (final_bn=True, preact_shortcut=True): csdongxian/AWP, AT_AWP/preactresnet.py (a7acf5d842).
    locuslab (final_bn=True, preact_shortcut=False): locuslab/fast_adversarial, CIFAR10/preact_resnet.py, 54f7287557.
  The two flags are the only change: each original hard-codes its choice.
- TradesMnistSmallCNN: yaodongyu/TRADES, models/small_cnn.py (`SmallCNN`), commit 6e8e11b7c2.
- WideResNet: yaodongyu/TRADES, models/wideresnet.py, commit 6e8e11b7c2 (FAT's models/wide_resnet.py is the same
  network), with its unused `sub_block1`.
- MadryWideResNet: ashafahi/free_adv_train, free_model.py (TF 1.x), commit c42cac2, in PyTorch: TF's 'SAME' padding
  as an explicit pad, `contrib.layers.batch_norm` (decay 0.9, epsilon 1e-3, its fused kernel's unbiased running
  variance) as BatchNorm2d(momentum=0.1, eps=1e-3), TF's initialisers by their definitions, modules named as the
  variable scopes. Changed: the input is the [0, 1] image, multiplied by 255 first (the official feeds [0, 255]).
"""
import collections
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
  def __init__(self):
    super().__init__()
    self.block1_conv1 = nn.Conv2d(3, 64, 3, padding=1)
    self.block1_conv2 = nn.Conv2d(64, 64, 3, padding=1)
    self.block1_pool1 = nn.MaxPool2d(2, 2)
    self.batchnorm1_1 = nn.BatchNorm2d(64)
    self.batchnorm1_2 = nn.BatchNorm2d(64)
    self.block2_conv1 = nn.Conv2d(64, 128, 3, padding=1)
    self.block2_conv2 = nn.Conv2d(128, 128, 3, padding=1)
    self.block2_pool1 = nn.MaxPool2d(2, 2)
    self.batchnorm2_1 = nn.BatchNorm2d(128)
    self.batchnorm2_2 = nn.BatchNorm2d(128)
    self.block3_conv1 = nn.Conv2d(128, 196, 3, padding=1)
    self.block3_conv2 = nn.Conv2d(196, 196, 3, padding=1)
    self.block3_pool1 = nn.MaxPool2d(2, 2)
    self.batchnorm3_1 = nn.BatchNorm2d(196)
    self.batchnorm3_2 = nn.BatchNorm2d(196)
    self.activ = nn.ReLU()
    self.fc1 = nn.Linear(196 * 4 * 4, 256)
    self.fc2 = nn.Linear(256, 10)

  def forward(self, x):
    x = self.activ(self.batchnorm1_1(self.block1_conv1(x)))
    x = self.block1_pool1(self.activ(self.batchnorm1_2(self.block1_conv2(x))))
    x = self.activ(self.batchnorm2_1(self.block2_conv1(x)))
    x = self.block2_pool1(self.activ(self.batchnorm2_2(self.block2_conv2(x))))
    x = self.activ(self.batchnorm3_1(self.block3_conv1(x)))
    x = self.block3_pool1(self.activ(self.batchnorm3_2(self.block3_conv2(x))))
    x = x.view(-1, 196 * 4 * 4)
    return self.fc2(self.activ(self.fc1(x)))


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != self.expansion * planes:
      self.shortcut = nn.Sequential(
          nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
          nn.BatchNorm2d(self.expansion * planes))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out += self.shortcut(x)
    return F.relu(out)


class ResNet18(nn.Module):
  def __init__(self, num_classes=10):
    super().__init__()
    self.in_planes = 64
    self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.layer1 = self._make_layer(64, 2, stride=1)
    self.layer2 = self._make_layer(128, 2, stride=2)
    self.layer3 = self._make_layer(256, 2, stride=2)
    self.layer4 = self._make_layer(512, 2, stride=2)
    self.linear = nn.Linear(512, num_classes)

  def _make_layer(self, planes, num_blocks, stride):
    layers = []
    for stride in [stride] + [1] * (num_blocks - 1):
      layers.append(BasicBlock(self.in_planes, planes, stride))
      self.in_planes = planes
    return nn.Sequential(*layers)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    out = F.avg_pool2d(out, 4)
    return self.linear(out.view(out.size(0), -1))


class PreActBlock(nn.Module):
  expansion = 1

  def __init__(self, in_planes, planes, stride=1, preact_shortcut=True):
    super().__init__()
    self.preact_shortcut = preact_shortcut
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
    if stride != 1 or in_planes != self.expansion * planes:
      self.shortcut = nn.Sequential(
          nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out if self.preact_shortcut else x) if hasattr(self, 'shortcut') else x
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    out += shortcut
    return out


class PreActResNet18(nn.Module):
  def __init__(self, num_classes=10, final_bn=True, preact_shortcut=True):
    super().__init__()
    self.in_planes = 64
    self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    self.layer1 = self._make_layer(64, 2, 1, preact_shortcut)
    self.layer2 = self._make_layer(128, 2, 2, preact_shortcut)
    self.layer3 = self._make_layer(256, 2, 2, preact_shortcut)
    self.layer4 = self._make_layer(512, 2, 2, preact_shortcut)
    if final_bn:
      self.bn = nn.BatchNorm2d(512)
    self.linear = nn.Linear(512, num_classes)

  def _make_layer(self, planes, num_blocks, stride, preact_shortcut):
    layers = []
    for stride in [stride] + [1] * (num_blocks - 1):
      layers.append(PreActBlock(self.in_planes, planes, stride, preact_shortcut))
      self.in_planes = planes
    return nn.Sequential(*layers)

  def forward(self, x):
    out = self.conv1(x)
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    if hasattr(self, 'bn'):
      out = F.relu(self.bn(out))
    out = F.avg_pool2d(out, 4)
    return self.linear(out.view(out.size(0), -1))


class WideBasicBlock(nn.Module):   # TRADES' `BasicBlock`
  def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.relu1 = nn.ReLU(inplace=True)
    self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_planes)
    self.relu2 = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
    self.droprate = dropRate
    self.equalInOut = (in_planes == out_planes)
    self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                                            padding=0, bias=False) or None

  def forward(self, x):
    if not self.equalInOut:
      x = self.relu1(self.bn1(x))
    else:
      out = self.relu1(self.bn1(x))
    out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
    if self.droprate > 0:
      out = F.dropout(out, p=self.droprate, training=self.training)
    out = self.conv2(out)
    return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
  def __init__(self, nb_layers, in_planes, out_planes, block, stride, dropRate=0.0):
    super().__init__()
    self.layer = nn.Sequential(*[block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1,
                                       dropRate) for i in range(int(nb_layers))])

  def forward(self, x):
    return self.layer(x)


class WideResNet(nn.Module):
  def __init__(self, depth=34, num_classes=10, widen_factor=10, dropRate=0.0):
    super().__init__()
    nChannels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    assert (depth - 4) % 6 == 0
    n = (depth - 4) / 6
    block = WideBasicBlock
    self.conv1 = nn.Conv2d(3, nChannels[0], kernel_size=3, stride=1, padding=1, bias=False)
    self.block1 = NetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
    self.sub_block1 = NetworkBlock(n, nChannels[0], nChannels[1], block, 1, dropRate)
    self.block2 = NetworkBlock(n, nChannels[1], nChannels[2], block, 2, dropRate)
    self.block3 = NetworkBlock(n, nChannels[2], nChannels[3], block, 2, dropRate)
    self.bn1 = nn.BatchNorm2d(nChannels[3])
    self.relu = nn.ReLU(inplace=True)
    self.fc = nn.Linear(nChannels[3], num_classes)
    self.nChannels = nChannels[3]
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(0, math.sqrt(2. / n))
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.fill_(1)
        m.bias.data.zero_()
      elif isinstance(m, nn.Linear):
        m.bias.data.zero_()

  def forward(self, x):
    out = self.conv1(x)
    out = self.block3(self.block2(self.block1(out)))
    out = self.relu(self.bn1(out))
    out = F.avg_pool2d(out, 8)
    out = out.view(-1, self.nChannels)
    return self.fc(out)


class TradesMnistSmallCNN(nn.Module):
  """yaodongyu/TRADES, models/small_cnn.py (`SmallCNN`), commit 6e8e11b."""

  def __init__(self, drop=0.5):
    super().__init__()
    self.num_channels = 1
    self.num_labels = 10
    activ = nn.ReLU(True)
    self.feature_extractor = nn.Sequential(collections.OrderedDict([
        ('conv1', nn.Conv2d(self.num_channels, 32, 3)),
        ('relu1', activ),
        ('conv2', nn.Conv2d(32, 32, 3)),
        ('relu2', activ),
        ('maxpool1', nn.MaxPool2d(2, 2)),
        ('conv3', nn.Conv2d(32, 64, 3)),
        ('relu3', activ),
        ('conv4', nn.Conv2d(64, 64, 3)),
        ('relu4', activ),
        ('maxpool2', nn.MaxPool2d(2, 2)),
    ]))
    self.classifier = nn.Sequential(collections.OrderedDict([
        ('fc1', nn.Linear(64 * 4 * 4, 200)),
        ('relu1', activ),
        ('drop', nn.Dropout(drop)),
        ('fc2', nn.Linear(200, 200)),
        ('relu2', activ),
        ('fc3', nn.Linear(200, self.num_labels)),
    ]))
    for m in self.modules():
      if isinstance(m, (nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)
        if m.bias is not None:
          nn.init.constant_(m.bias, 0)
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)
    nn.init.constant_(self.classifier.fc3.weight, 0)
    nn.init.constant_(self.classifier.fc3.bias, 0)

  def forward(self, input):  # pylint: disable=redefined-builtin
    features = self.feature_extractor(input)
    logits = self.classifier(features.view(-1, 64 * 4 * 4))
    return logits


def _tf_same(x, stride, k=3):
  """TF's 'SAME' padding of a square input: the total pad split low = total // 2, high = the rest."""
  total = max((-(-x.shape[-1] // stride) - 1) * stride + k - x.shape[-1], 0)
  return F.pad(x, (total // 2, total - total // 2) * 2)


def _leaky_relu(x, leakiness=0.1):   # the official `_relu`
  return torch.where(x < 0.0, leakiness * x, x)


def _per_image_standardization(image):   # TF 1.x's tf.image.per_image_standardization, on NCHW
  num_pixels = image[0].numel()
  image_mean = image.mean(dim=(1, 2, 3), keepdim=True)
  variance = F.relu(image.square().mean(dim=(1, 2, 3), keepdim=True) - image_mean.square())
  return (image - image_mean) / torch.clamp(variance.sqrt(), min=1 / math.sqrt(num_pixels))


class _TFConv(nn.Conv2d):   # the official `_conv`: no bias, N(0, sqrt(2 / (k * k * out))), 'SAME'
  def __init__(self, in_filters, out_filters, stride):
    super().__init__(in_filters, out_filters, 3, stride, padding=0, bias=False)
    self.weight.data.normal_(0, math.sqrt(2.0 / (3 * 3 * out_filters)))

  def forward(self, x):
    return super().forward(_tf_same(x, self.stride[0]))


class MadryUnit(nn.Module):   # the official `_residual`
  def __init__(self, in_filter, out_filter, stride, activate_before_residual):
    super().__init__()
    self.in_filter, self.out_filter, self.stride = in_filter, out_filter, stride
    self.activate_before_residual = activate_before_residual
    self.init_bn = nn.BatchNorm2d(in_filter, eps=1e-3, momentum=0.1)
    self.conv1 = _TFConv(in_filter, out_filter, stride)
    self.bn2 = nn.BatchNorm2d(out_filter, eps=1e-3, momentum=0.1)
    self.conv2 = _TFConv(out_filter, out_filter, 1)

  def forward(self, x):
    if self.activate_before_residual:
      x = _leaky_relu(self.init_bn(x))
      orig_x = x
    else:
      orig_x = x
      x = _leaky_relu(self.init_bn(x))
    x = self.conv1(x)
    x = self.conv2(_leaky_relu(self.bn2(x)))
    if self.in_filter != self.out_filter:
      orig_x = F.avg_pool2d(orig_x, self.stride, self.stride)
      pad = (self.out_filter - self.in_filter) // 2
      orig_x = F.pad(orig_x, (0, 0, 0, 0, pad, pad))
    return x + orig_x


class MadryWideResNet(nn.Module):
  def __init__(self, units=5, width=10, num_classes=10):
    super().__init__()
    filters = [16, 16 * width, 32 * width, 64 * width]
    self.init_conv = _TFConv(3, 16, 1)
    for stage, stride in enumerate([1, 2, 2]):
      for i in range(units):
        unit = MadryUnit(filters[stage] if i == 0 else filters[stage + 1], filters[stage + 1], stride if i == 0 else 1,
                         stage == 0 and i == 0)
        self.add_module(f'unit_{stage + 1}_{i}', unit)
    self.units = units
    self.final_bn = nn.BatchNorm2d(filters[3], eps=1e-3, momentum=0.1)
    self.logit = nn.Linear(filters[3], num_classes)
    bound = math.sqrt(3 / filters[3])   # uniform_unit_scaling_initializer(factor=1.0); biases constant 0
    self.logit.weight.data.uniform_(-bound, bound)
    self.logit.bias.data.zero_()

  def forward(self, x):
    x = self.init_conv(_per_image_standardization(x * 255))
    for stage in range(3):
      for i in range(self.units):
        x = getattr(self, f'unit_{stage + 1}_{i}')(x)
    x = _leaky_relu(self.final_bn(x))
    return self.logit(x.mean(dim=(2, 3)))
