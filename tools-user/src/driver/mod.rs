//! The loops a tool hands its plan to: interval histograms, or a stream of
//! events. Each owns the output, the signals, the loss reports and the exit
//! status; a tool's file holds only its flags, its plan and how it prints.

pub mod events;
pub mod histograms;
