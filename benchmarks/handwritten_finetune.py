"""Fine-tuning a ResNet-18 the way a PyTorch user writes it without nodeflow: d2l.ai's recipe
(chapter "Fine-Tuning"), in plain torch and torchvision.

Every layer trains; the new fc layer (Xavier init) at 10x the learning rate; SGD with weight decay
1e-3; RandomResizedCrop 224 + horizontal flip + ImageNet normalisation for training, resize 256 then
centre crop 224 for validation and test. After each epoch it scores the validation split and prints
one line, ``val_accuracy=... epoch=...``; it stops at the first epoch at or above ``--target`` (or
after ``--epochs``) and prints ``test_accuracy=...``.

    python benchmarks/handwritten_finetune.py DATA WEIGHTS.pth [--target 0.9] [--epochs 10]
        [--lr 1e-3] [--batch-size 32] [--size 224] [--device cpu]

DATA holds train/ validation/ test/ folders of class folders; WEIGHTS.pth is a resnet18 state_dict.
``time_to_accuracy.py`` runs it as its hand-written row.
"""

import argparse
import os

import torch
import torchvision
from torch import nn
from torchvision import transforms
from torchvision.datasets import ImageFolder

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("weights")
parser.add_argument("--target", type=float, default=0.9)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--device", default="cpu")
args = parser.parse_args()
device = torch.device(args.device)
torch.manual_seed(0)

normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
train_augs = transforms.Compose([transforms.RandomResizedCrop(args.size), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), normalize])
test_augs = transforms.Compose([transforms.Resize(args.size * 8 // 7), transforms.CenterCrop(args.size),
                                transforms.ToTensor(), normalize])
train_set = ImageFolder(os.path.join(args.data, "train"), transform=train_augs)
workers = min(4, os.cpu_count() or 1)  # d2l's get_dataloader_workers(), bounded by the cores there are
train_iter = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=workers)


def test_iter(split):
    data = ImageFolder(os.path.join(args.data, split), transform=test_augs)
    return torch.utils.data.DataLoader(data, batch_size=args.batch_size, num_workers=workers)


finetune_net = torchvision.models.resnet18()
state = torch.load(args.weights, map_location="cpu", weights_only=True)
state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the source task's head goes
finetune_net.load_state_dict(state, strict=False)
finetune_net.fc = nn.Linear(finetune_net.fc.in_features, len(train_set.classes))
nn.init.xavier_uniform_(finetune_net.fc.weight)
finetune_net = finetune_net.to(device)

params_1x = [param for name, param in finetune_net.named_parameters() if name not in ["fc.weight", "fc.bias"]]
trainer = torch.optim.SGD([{"params": params_1x}, {"params": finetune_net.fc.parameters(), "lr": args.lr * 10}],
                          lr=args.lr, weight_decay=0.001)
loss = nn.CrossEntropyLoss()


def accuracy(net, data_iter):
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            correct += (net(X).argmax(1) == y).sum().item()
            total += len(y)
    return correct / max(total, 1)


validation = test_iter("validation")
for epoch in range(1, args.epochs + 1):
    finetune_net.train()
    for X, y in train_iter:
        X, y = X.to(device), y.to(device)
        trainer.zero_grad()
        loss(finetune_net(X), y).backward()
        trainer.step()
    val_acc = accuracy(finetune_net, validation)
    print(f"val_accuracy={val_acc:.4f} epoch={epoch}", flush=True)
    if val_acc >= args.target:
        break
print(f"test_accuracy={accuracy(finetune_net, test_iter('test')):.4f}", flush=True)
