# Biba (integrity), SPEC §12: integrity levels only.
#
# read:                  object integrity >= subject integrity (no read down).
# write, append, invoke: subject integrity >= object integrity (no write up).
# Other actions deny. Missing or malformed levels deny.
#
# Levels are integers 0..=3 or unclassified < confidential < secret <
# top_secret (subject.attributes.integrity, object.attributes.integrity).
package kest.biba

default allow := false

level_names := {"unclassified": 0, "confidential": 1, "secret": 2, "top_secret": 3}

level(x) := x if {
	is_number(x)
	x in {0, 1, 2, 3}
}

level(x) := level_names[x] if is_string(x)

subject_integrity := level(input.subject.attributes.integrity)

object_integrity := level(input.object.attributes.integrity)

allow if {
	input.action == "read"
	object_integrity >= subject_integrity
}

allow if {
	input.action in {"write", "append", "invoke"}
	subject_integrity >= object_integrity
}
