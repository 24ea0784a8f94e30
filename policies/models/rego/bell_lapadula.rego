# Bell-LaPadula (confidentiality), SPEC §12.
#
# read:          the subject (clearance, categories) dominates the object
#                (classification, categories): no read up.
# write, append: the object dominates the subject, and the object dominates
#                every ancestor with action "read" whose resource_attributes
#                carry a classification: no write down through the flow.
# Other actions deny. Missing or malformed levels or categories deny.
#
# Levels are integers 0..=3 or unclassified < confidential < secret <
# top_secret; categories are arrays of strings (sets). The rules below read
# the plain SPEC §6.1 context; `input.derived` is not used.
package kest.bell_lapadula

default allow := false

level_names := {"unclassified": 0, "confidential": 1, "secret": 2, "top_secret": 3}

level(x) := x if {
	is_number(x)
	x in {0, 1, 2, 3}
}

level(x) := level_names[x] if is_string(x)

valid_level(x) if level(x) >= 0

categories(x) := {c | some c in x} if {
	is_array(x)
	every c in x {
		is_string(c)
	}
}

valid_categories(x) if {
	is_array(x)
	every c in x {
		is_string(c)
	}
}

# a dominates b: level(a) >= level(b) and categories(a) ⊇ categories(b).
dominates(la, ca, lb, cb) if {
	la >= lb
	count(cb - ca) == 0
}

default ancestors := []

ancestors := input.lineage.ancestors if is_array(input.lineage.ancestors)

subject_level := level(input.subject.attributes.clearance)

subject_categories := categories(input.subject.attributes.categories)

object_level := level(input.object.attributes.classification)

object_categories := categories(input.object.attributes.categories)

# History: ancestors that read a resource carrying a classification.
classified_reads contains a if {
	some a in ancestors
	a.action == "read"
	a.resource_attributes.classification != null
}

# Every classified read has a valid level and (absent or) valid categories.
default read_history_valid := false

read_history_valid if {
	every a in classified_reads {
		valid_level(a.resource_attributes.classification)
		optional_categories(a.resource_attributes)
	}
}

optional_categories(attrs) if object.get(attrs, "categories", null) == null

optional_categories(attrs) if valid_categories(attrs.categories)

read_levels := {l | some a in classified_reads; l := level(a.resource_attributes.classification)}

default max_read_level := -1

max_read_level := max(read_levels) if count(read_levels) > 0

read_categories := {c |
	some a in classified_reads
	cs := categories(object.get(a.resource_attributes, "categories", null))
	some c in cs
}

allow if {
	input.action == "read"
	dominates(subject_level, subject_categories, object_level, object_categories)
}

allow if {
	input.action in {"write", "append"}
	dominates(object_level, object_categories, subject_level, subject_categories)
	read_history_valid
	object_level >= max_read_level
	count(read_categories - object_categories) == 0
}
