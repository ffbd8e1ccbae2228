pub fn placeholder_to_remove() {}
