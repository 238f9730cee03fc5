// tilecheck reads a C2SP tlog-tiles log over HTTP with golang.org/x/mod/sumdb/tlog, the Go
// checksum database's tile client (where the tile layout comes from), and checks, against the
// log's current checkpoint: every tile it reads hashes up to the checkpoint's root, the entry at
// INDEX (read from its entry bundle) is included, and the tree is consistent with an older
// checkpoint (OLD_SIZE, OLD_ROOT). It shares no code with sigstead.
//
//	tilecheck BASE_URL INDEX OLD_SIZE OLD_ROOT_BASE64
package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

type reader struct{ base string }

func get(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// C2SP tlog-tiles paths are the sumdb's without the tile height: tile/<L>/<N>[.p/<W>].
func (r reader) path(t tlog.Tile) string {
	p := t.Path()
	if t.L == -1 {
		return strings.Replace(p, "tile/8/data/", "tile/entries/", 1)
	}
	return strings.Replace(p, "tile/8/", "tile/", 1)
}

func (r reader) Height() int { return 8 }

func (r reader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := get(r.base + "/" + r.path(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (r reader) SaveTiles([]tlog.Tile, [][]byte) {}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tilecheck: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: tilecheck BASE_URL INDEX OLD_SIZE OLD_ROOT_BASE64")
	}
	base := strings.TrimRight(os.Args[1], "/")
	index, _ := strconv.ParseInt(os.Args[2], 10, 64)
	oldSize, _ := strconv.ParseInt(os.Args[3], 10, 64)
	oldRootBytes, err := base64.StdEncoding.DecodeString(os.Args[4])
	if err != nil || len(oldRootBytes) != 32 {
		fail("bad old root")
	}
	var oldRoot tlog.Hash
	copy(oldRoot[:], oldRootBytes)

	note, err := get(base + "/checkpoint")
	if err != nil {
		fail("%v", err)
	}
	lines := strings.Split(string(note), "\n")
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size %q", lines[1])
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != 32 {
		fail("checkpoint root %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	r := reader{base}
	hashes := tlog.TileHashReader(tree, r)

	// The entry itself, from its bundle: uint16 big-endian length, then the leaf.
	bundleTile := tlog.Tile{H: 8, L: -1, N: index / 256, W: 256}
	if rest := size - bundleTile.N*256; rest < 256 {
		bundleTile.W = int(rest)
	}
	bundle, err := get(base + "/" + r.path(bundleTile))
	if err != nil {
		fail("%v", err)
	}
	var leaf []byte
	for i, at := int64(0), 0; i <= index%256; i++ {
		n := int(bundle[at])<<8 | int(bundle[at+1])
		leaf = bundle[at+2 : at+2+n]
		at += 2 + n
	}
	proof, err := tlog.ProveRecord(size, index, hashes)
	if err != nil {
		fail("proving entry %d: %v", index, err)
	}
	if err := tlog.CheckRecord(proof, size, root, index, tlog.RecordHash(leaf)); err != nil {
		fail("entry %d is not in the tree: %v", index, err)
	}
	consistency, err := tlog.ProveTree(size, oldSize, hashes)
	if err != nil {
		fail("proving consistency %d -> %d: %v", oldSize, size, err)
	}
	if err := tlog.CheckTree(consistency, size, root, oldSize, oldRoot); err != nil {
		fail("tree %d is not consistent with %d: %v", size, oldSize, err)
	}
	fmt.Printf("ok: entry %d included in tree %d, consistent with tree %d\n", index, size, oldSize)
}
