//! Statistics that every gantry layer reports into.
#![deny(missing_docs)]
