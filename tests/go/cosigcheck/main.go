// cosigcheck verifies a checkpoint cosigned by a sigstead witness the way Go log clients do:
// golang.org/x/mod/sumdb/note opens the note with verifiers from transparency-dev/formats/note,
// the log's (an ECDSA vkey, type 0x02) and the witness's (a cosignature/v1 vkey, type 0x04).
// Both signatures must verify; it prints the cosignature's timestamp. It shares no code with
// sigstead.
//
//	cosigcheck LOG_VKEY WITNESS_VKEY NOTE_FILE
package main

import (
	"fmt"
	"os"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cosigcheck: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: cosigcheck LOG_VKEY WITNESS_VKEY NOTE_FILE")
	}
	logV, err := fnote.NewVerifier(os.Args[1])
	if err != nil {
		fail("log vkey: %v", err)
	}
	witnessV, err := fnote.NewVerifierForCosignatureV1(os.Args[2])
	if err != nil {
		fail("witness vkey: %v", err)
	}
	msg, err := os.ReadFile(os.Args[3])
	if err != nil {
		fail("%v", err)
	}
	n, err := note.Open(msg, note.VerifierList(logV, witnessV))
	if err != nil {
		fail("open: %v", err)
	}
	if len(n.Sigs) != 2 {
		fail("%d signatures verified, want 2 (the log's and the witness's)", len(n.Sigs))
	}
	for _, sig := range n.Sigs {
		if sig.Name == witnessV.Name() && sig.Hash == witnessV.KeyHash() {
			ts, err := fnote.CoSigV1Timestamp(sig)
			if err != nil {
				fail("timestamp: %v", err)
			}
			fmt.Println(ts.Unix())
			return
		}
	}
	fail("no cosignature by %s", witnessV.Name())
}
