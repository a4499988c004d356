//! CSV importer (skeleton; see issue 5).
