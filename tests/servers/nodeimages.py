"""Tiny images for the test node, built locally (no registry is reachable): pause and a static HTTP file server.

Both are single static binaries packed as one-layer docker-archive tars that ``ctr images import`` reads.
Built once and cached under ~/.cache/livenexus/images, keyed by a hash of their source.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("LIVENEXUS_IMAGES", Path.home() / ".cache" / "livenexus" / "images"))
KUBE_VERSION = "v1.34.4"
PAUSE_TAG = "3.10.1"  # build/pause/Makefile TAG of that release
PAUSE_IMAGE = f"localhost/livenexus-pause:{PAUSE_TAG}"
HTTPD_PORT = 8080

HTTPD_SOURCE = """package main

// Serves the files under -root (the node tests mount a ConfigMap there); with -get it is the client instead
// and prints what the URL returns, so a pod can show what it reaches.
import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	root := flag.String("root", "/srv", "directory to serve")
	get := flag.String("get", "", "fetch this URL, print the body and exit (0 on HTTP 200)")
	ca := flag.String("ca", "", "PEM CA bundle for -get")
	timeout := flag.Duration("timeout", 10*time.Second, "-get timeout")
	flag.Parse()
	if *get == "" {
		log.Fatal(http.ListenAndServe(*addr, http.FileServer(http.Dir(*root))))
	}
	client := &http.Client{Timeout: *timeout}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	resp, err := client.Get(*get)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s\\n", resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
}
"""


class ImageBuildError(RuntimeError):
    pass


def _run(args: list[str], **kw: object) -> None:
    out = subprocess.run(args, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if out.returncode != 0:
        raise ImageBuildError(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")


def _go_env(name: str) -> str:
    return subprocess.run(["go", "env", name], capture_output=True, text=True, check=True).stdout.strip()


def _tar(out: Path, members: list[tuple[str, bytes]]) -> Path:
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
    tmp.replace(out)  # never leave a half-written archive under the cached name
    return out


def write_image_tar(out: Path, name: str, files: dict[str, bytes], entrypoint: list[str],
                    fmt: str = "docker") -> Path:
    """A one-layer image archive, ``fmt`` "docker" (docker-archive) or "oci" (oci-archive): every file mode
    0755 owned by root, timestamps zero, so the digests are stable."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o755
            t.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "tests/servers/nodeimages.py"}],
    }, sort_keys=True).encode()
    config_id = hashlib.sha256(config).hexdigest()
    if fmt == "docker":
        manifest = json.dumps([{"Config": f"{config_id}.json", "RepoTags": [name],
                                "Layers": [f"{diff_id}/layer.tar"]}]).encode()
        return _tar(out, [(f"{config_id}.json", config), (f"{diff_id}/layer.tar", layer_bytes),
                          ("manifest.json", manifest)])

    def desc(media: str, data: bytes) -> dict[str, object]:
        return {"mediaType": media, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}", "size": len(data)}

    oci = "application/vnd.oci.image"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": f"{oci}.manifest.v1+json",
                           "config": desc(f"{oci}.config.v1+json", config),
                           "layers": [desc(f"{oci}.layer.v1.tar", layer_bytes)]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {**desc(f"{oci}.manifest.v1+json", manifest), "annotations": {"org.opencontainers.image.ref.name": name}}]})
    return _tar(out, [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index.encode()),
                      *((f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b) for b in (layer_bytes, config, manifest))])


def pause_binary() -> Path:
    """Kubernetes' own pause.c, compiled static."""
    src = Path(_go_env("GOMODCACHE")) / f"k8s.io/kubernetes@{KUBE_VERSION}" / "build/pause/linux/pause.c"
    if not src.exists():
        raise ImageBuildError(f"{src} missing: run hack/install-tools.sh kube first (it downloads the module)")
    binary = CACHE / f"pause-{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        _run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_TAG}-livenexus",
              "-o", f"{binary}.tmp", str(src)])
        _run(["strip", f"{binary}.tmp"])
        Path(f"{binary}.tmp").replace(binary)
    return binary


def pause_image() -> Path:
    """The pause binary as PAUSE_IMAGE (the node's sandbox image), a docker-archive."""
    binary = pause_binary()
    out = CACHE / f"{binary.name.replace('pause-', f'pause-{PAUSE_TAG}-')}.tar"
    if out.exists():
        return out
    return write_image_tar(out, PAUSE_IMAGE, {"/pause": binary.read_bytes()}, ["/pause"])


def httpd_image() -> tuple[Path, str]:
    """A static Go file server (about 5 MB); returns the archive and its image name."""
    go_version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256((HTTPD_SOURCE + go_version).encode()).hexdigest()[:12]
    name = f"localhost/livenexus-httpd:{key}"
    out = CACHE / f"httpd-{key}.tar"
    if out.exists():
        return out, name
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "go.mod").write_text("module livenexus.local/httpd\n\ngo 1.22\n")
        (Path(tmp) / "main.go").write_text(HTTPD_SOURCE)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
        _run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", "httpd", "."], cwd=tmp, env=env)
        data = (Path(tmp) / "httpd").read_bytes()
    for stale in CACHE.glob("httpd-*.tar"):
        stale.unlink()
    return write_image_tar(out, name, {"/httpd": data}, ["/httpd"]), name
