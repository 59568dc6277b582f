"""Print the pip requirement that pins torch or torchvision to the pair installed in this environment.

torchvision's release is tied to torch's: 0.(minor + 15) goes with 2.minor (0.24 with 2.9, ..., 0.29 with 2.14), and a
torchvision built for another torch fails at import. The Makefile calls this to keep a user's own torch build and add
the torchvision made for it, and to pin both while the rest of kdbook's dependencies resolve.

    python tools/torch_pair.py torch                  # torch==2.14.1 (the installed build, local label dropped)
    python tools/torch_pair.py torchvision            # torchvision==0.29.* (the release for the installed torch)
    python tools/torch_pair.py installed-torchvision  # torchvision==0.29.1 (the installed one, pinned as it is)
"""
import sys
from importlib.metadata import version

def public(v):
    "A version without its local label: '2.11.0+cu130' -> '2.11.0' (pip matches '==2.11.0' to any local build)."
    return v.split('+')[0]

def torchvision_for(torch_version):
    "The torchvision release series built for `torch_version`, as a pip requirement."
    major, minor = (int(p) for p in public(torch_version).split('.')[:2])
    if major != 2 or not 9 <= minor <= 14:
        sys.exit(f"kdbook is tested with torch 2.9 to 2.14, this environment has torch {torch_version}: "
                 "install one of those (e.g. pip install torch==2.14.1 torchvision==0.29.1)")
    return f"torchvision==0.{minor + 15}.*"

if __name__ == '__main__':
    what = sys.argv[1] if len(sys.argv) > 1 else ''
    if what == 'torch': print(f"torch=={public(version('torch'))}")
    elif what == 'torchvision': print(torchvision_for(version('torch')))
    elif what == 'installed-torchvision': print(f"torchvision=={public(version('torchvision'))}")
    else: sys.exit("usage: python tools/torch_pair.py torch|torchvision|installed-torchvision")
