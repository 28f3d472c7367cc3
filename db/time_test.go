package db

import (
	"sort"
	"testing"
	"time"
)

func TestParseTime_ReadsStoredForms(t *testing.T) {
	t.Parallel()
	want := time.Date(2024, 3, 5, 7, 8, 9, 0, time.UTC)
	micro := want.Add(123456 * time.Microsecond)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2024-03-05T07:08:09Z", want},
		{"2024-03-05T07:08:09.123456Z", micro},
		{"2024-03-05T07:08:09.123456000Z", micro},
		{"2024-03-05T09:08:09+02:00", want},
		{"2024-03-05 07:08:09", want},
		{"2024-03-05 07:08:09.123456", micro},
		{"2024-03-05 07:08:09.123", want.Add(123 * time.Millisecond)},
		{"2024-03-05 07:08:09+00:00", want},
		{"2024-03-05T07:08:09", want},
		{" 2024-03-05 07:08:09 ", want},
		{"2024-03-05 07:08:09 +0000 UTC", want},
		{"2024-03-05 07:08:09.123456 +0000 UTC m=+0.001", micro},
		{"2024-03-05", time.Date(2024, 3, 5, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := parseTime(tt.in)
		if err != nil {
			t.Errorf("parseTime(%q): %v", tt.in, err)
			continue
		}
		if !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("parseTime(%q) = %v, want %v UTC", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", "yesterday", "2024-13-45 99:00:00"} {
		if _, err := parseTime(bad); err == nil {
			t.Errorf("parseTime(%q) succeeded, want error", bad)
		}
	}
}

func TestFormatTime_RoundTripsAndSortsAsText(t *testing.T) {
	t.Parallel()
	base := time.Date(2024, 3, 5, 7, 8, 9, 0, time.FixedZone("x", 3600))
	times := []time.Time{base, base.Add(100 * time.Millisecond), base.Add(time.Nanosecond), base.Add(time.Second)}
	var texts []string
	for _, tm := range times {
		s := formatTime(tm)
		back, err := parseTime(s)
		if err != nil || !back.Equal(tm) {
			t.Errorf("round trip %v -> %q -> %v, %v", tm, s, back, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("%q is not RFC 3339: %v", s, err)
		}
		texts = append(texts, s)
	}
	if !sort.StringsAreSorted([]string{texts[0], texts[2], texts[1], texts[3]}) {
		t.Errorf("text order differs from time order: %q", texts)
	}
}

func TestNullTime_ScansWhatToolsStore(t *testing.T) {
	t.Parallel()
	want := time.Date(2024, 3, 5, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name  string
		src   any
		valid bool
	}{
		{"Nil", nil, false},
		{"Time", want.In(time.FixedZone("x", 7200)), true},
		{"RFC3339", "2024-03-05T07:08:09Z", true},
		{"SQLiteText", []byte("2024-03-05 07:08:09"), true},
		{"UnixSeconds", want.Unix(), true},
		{"UnixMillis", want.UnixMilli(), true},
		{"UnixFloat", float64(want.Unix()), true},
		{"NumericText", "1709622489", true},
		{"Garbage", "not a time", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n nullTime
			if err := n.Scan(tt.src); err != nil {
				t.Fatal(err)
			}
			if n.Valid != tt.valid {
				t.Fatalf("Valid = %v, want %v", n.Valid, tt.valid)
			}
			if tt.valid && !n.Time.Equal(want) {
				t.Errorf("Time = %v, want %v", n.Time, want)
			}
		})
	}
}
