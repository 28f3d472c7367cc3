package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Z85 is ZeroMQ's text encoding of binary keys (ZeroMQ RFC 32): four bytes
// become five printable characters. libzmq's zmq_curve_keypair writes CURVE
// keys as 40 Z85 characters, and so do our key files.

const z85Alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"

// z85Decoder maps a character to its value plus one; 0 marks a character
// outside the alphabet.
var z85Decoder = func() (d [256]byte) {
	for i := 0; i < len(z85Alphabet); i++ {
		d[z85Alphabet[i]] = byte(i + 1)
	}
	return d
}()

var errZ85 = errors.New("z85")

// z85Encode encodes data, whose length must be a multiple of 4.
func z85Encode(data []byte) (string, error) {
	if len(data)%4 != 0 {
		return "", fmt.Errorf("%w: %d bytes is not a multiple of 4", errZ85, len(data))
	}
	out := make([]byte, 0, len(data)/4*5)
	for i := 0; i < len(data); i += 4 {
		v := binary.BigEndian.Uint32(data[i:])
		var chunk [5]byte
		for j := 4; j >= 0; j-- {
			chunk[j] = z85Alphabet[v%85]
			v /= 85
		}
		out = append(out, chunk[:]...)
	}
	return string(out), nil
}

// z85Decode decodes text, whose length must be a multiple of 5.
func z85Decode(text string) ([]byte, error) {
	if len(text)%5 != 0 {
		return nil, fmt.Errorf("%w: %d characters is not a multiple of 5", errZ85, len(text))
	}
	out := make([]byte, 0, len(text)/5*4)
	for i := 0; i < len(text); i += 5 {
		var v uint64
		for j := 0; j < 5; j++ {
			d := z85Decoder[text[i+j]]
			if d == 0 {
				return nil, fmt.Errorf("%w: character %q at %d is not in the alphabet", errZ85, text[i+j], i+j)
			}
			v = v*85 + uint64(d-1)
		}
		if v > 0xFFFFFFFF {
			return nil, fmt.Errorf("%w: group at %d overflows 32 bits", errZ85, i)
		}
		out = binary.BigEndian.AppendUint32(out, uint32(v))
	}
	return out, nil
}
