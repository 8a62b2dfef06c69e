//! Bounded record buffer (H5).

/// The record a full [`RecordBuffer`] refused, handed back to the caller.
///
/// # Example
/// ```
/// use gantry_host::{RecordBuffer, RecordBufferFull};
///
/// let mut batch = RecordBuffer::new(1);
/// batch.push("a").unwrap();
/// let RecordBufferFull { record, capacity } = batch.push("b").unwrap_err();
/// assert_eq!((record, capacity), ("b", 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record buffer full: it holds its capacity of {capacity} records")]
pub struct RecordBufferFull<T> {
    /// The refused record.
    pub record: T,
    /// The buffer's capacity.
    pub capacity: usize,
}

/// A bounded batch of records: [`push`](Self::push) refuses (and returns the record) once
/// `capacity` records are held, so a producer knows to hand the batch on with
/// [`drain`](Self::drain).
///
/// Storage for `capacity` records is allocated up front and kept across `drain` and `clear`.
///
/// # Example
/// ```
/// use gantry_host::RecordBuffer;
///
/// let mut batch = RecordBuffer::new(2);
/// batch.push(1).unwrap();
/// batch.push(2).unwrap();
/// assert!(batch.is_full());
/// assert_eq!(batch.push(3).unwrap_err().record, 3);
/// let taken: Vec<i32> = batch.drain().collect();
/// assert_eq!(taken, [1, 2]);
/// assert!(batch.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct RecordBuffer<T> {
    records: Vec<T>,
    capacity: usize,
}

impl<T> RecordBuffer<T> {
    /// A buffer for at most `capacity` records, with storage for all of them allocated now.
    ///
    /// # Panics
    /// When storage for `capacity` records cannot be allocated (as [`Vec::with_capacity`]).
    ///
    /// # Example
    /// ```
    /// let batch = gantry_host::RecordBuffer::<u64>::new(1000);
    /// assert_eq!(batch.capacity(), 1000);
    /// ```
    #[track_caller]
    pub fn new(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends `record`, or hands it back in the error when the buffer is full.
    ///
    /// # Errors
    /// [`RecordBufferFull`] (holding `record`) when `len() == capacity()`.
    ///
    /// # Example
    /// ```
    /// let mut batch = gantry_host::RecordBuffer::new(1);
    /// assert!(batch.push('x').is_ok());
    /// assert!(batch.push('y').is_err());
    /// ```
    pub fn push(&mut self, record: T) -> Result<(), RecordBufferFull<T>> {
        if self.records.len() >= self.capacity {
            return Err(RecordBufferFull {
                record,
                capacity: self.capacity,
            });
        }
        self.records.push(record);
        Ok(())
    }

    /// True when the buffer holds `capacity` records.
    ///
    /// # Example
    /// ```
    /// let mut batch = gantry_host::RecordBuffer::new(1);
    /// batch.push(()).unwrap();
    /// assert!(batch.is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.capacity
    }

    /// Removes every record, in push order, keeping the storage. Records the iterator does not
    /// yield are dropped when it is dropped.
    ///
    /// # Example
    /// ```
    /// let mut batch = gantry_host::RecordBuffer::new(4);
    /// batch.push(String::from("a")).unwrap();
    /// assert_eq!(batch.drain().collect::<Vec<_>>(), ["a"]);
    /// assert_eq!(batch.len(), 0);
    /// ```
    pub fn drain(&mut self) -> std::vec::Drain<'_, T> {
        self.records.drain(..)
    }

    /// Drops every record, keeping the storage.
    ///
    /// # Example
    /// ```
    /// let mut batch = gantry_host::RecordBuffer::new(4);
    /// batch.push(1).unwrap();
    /// batch.clear();
    /// assert!(batch.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Number of records held.
    ///
    /// # Example
    /// ```
    /// let mut batch = gantry_host::RecordBuffer::new(4);
    /// batch.push(1).unwrap();
    /// assert_eq!(batch.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is held.
    ///
    /// # Example
    /// ```
    /// assert!(gantry_host::RecordBuffer::<u8>::new(4).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The most records the buffer holds.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::RecordBuffer::<u8>::new(4).capacity(), 4);
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The records held, in push order.
    ///
    /// # Example
    /// ```
    /// let mut batch = gantry_host::RecordBuffer::new(4);
    /// batch.push(1).unwrap();
    /// batch.push(2).unwrap();
    /// assert_eq!(batch.as_slice(), &[1, 2]);
    /// ```
    pub fn as_slice(&self) -> &[T] {
        &self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn bound_holds_and_refused_record_comes_back() {
        let mut batch = RecordBuffer::new(3);
        for i in 0..3 {
            batch.push(i).unwrap();
        }
        for i in 3..10 {
            assert_eq!(
                batch.push(i),
                Err(RecordBufferFull {
                    record: i,
                    capacity: 3
                })
            );
            assert_eq!(batch.len(), 3);
        }
        assert_eq!(batch.drain().collect::<Vec<_>>(), [0, 1, 2]);
        batch.push(7).unwrap();
        assert_eq!(batch.as_slice(), &[7]);
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let mut batch = RecordBuffer::new(0);
        assert!(batch.is_full());
        assert!(batch.push(1).is_err());
        assert!(batch.is_empty());
    }

    #[test]
    fn records_are_dropped_exactly_once() {
        let token = Rc::new(());
        let mut batch = RecordBuffer::new(4);
        for _ in 0..4 {
            batch.push(Rc::clone(&token)).unwrap();
        }
        let refused = batch.push(Rc::clone(&token)).unwrap_err();
        assert_eq!(Rc::strong_count(&token), 6);
        drop(refused);
        let mut drain = batch.drain();
        drop(drain.next());
        drop(drain); // the three not yielded are dropped here
        assert_eq!(Rc::strong_count(&token), 1);
        batch.push(Rc::clone(&token)).unwrap();
        batch.clear();
        assert_eq!(Rc::strong_count(&token), 1);
        assert_eq!(batch.capacity(), 4);
    }
}
