// Our binding to the system's libbpf.so.1 (design §3a). Nothing nettrace-specific lives here.
export { BpfObject, possibleCpus } from './object';
export type { BpfProgram } from './object';
export { BpfMap } from './map';
export { attachTcx, attachTc, detachTc, destroyClsact } from './link';
export type { Attachment, TcDirection, TcTag } from './link';
export { inNetns, ifNameToIndex } from './netns';
export { RingReader } from './ringbuf';
export type { RecordHandler } from './ringbuf';
export { testRun } from './testrun';
export type { TestRunResult } from './testrun';
export { errnoName, describeErrno } from './errno';
export { readBtfEnum } from './btf';
