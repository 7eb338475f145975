"""Tests on a real node: kubelet + containerd + runc (hack/node.sh)."""
