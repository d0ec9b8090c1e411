package licensd

import "testing"

func TestCanonicalJSON(t *testing.T) {
	cases := map[string]string{
		`{"b":1,"a":[true,false,null]}`:                                `{"a":[true,false,null],"b":1}`,
		`{"｡":1,"😀":2,"é":3}`:                                          `{"é":3,"😀":2,"｡":1}`, // UTF-16 code units: U+D83D < U+FF61
		`[5.0,-0,1e21,1e-7,0.000001,123456789012345680000,1.5e-7,100]`: `[5,0,1e+21,1e-7,0.000001,123456789012345680000,1.5e-7,100]`,
		`["\u0007\"\\/\u007f\n"]`:                                      `["\u0007\"\\/` + "\u007f" + `\n"]`,
		`{ "z" : { "y" : 3.14159, "x" : "Zoë" } }`:                     `{"z":{"x":"Zoë","y":3.14159}}`,
	}
	for in, want := range cases {
		got, err := canonicalJSON([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("%s\n got %s (%v)\nwant %s", in, got, err, want)
		}
	}
	if _, err := canonicalJSON([]byte(`{"a":1} {}`)); err == nil {
		t.Error("trailing data accepted")
	}
}
