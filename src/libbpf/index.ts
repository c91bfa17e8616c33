// Our binding to the system's libbpf.so.1 through koffi (docs/architecture.md#why-koffi).
// Nothing nettrace-specific lives here: failures are LibbpfError (operation + errno).
export { BpfObject, possibleCpus } from './object';
export type { BpfProgram } from './object';
export { BpfMap } from './map';
export { attachTcx, attachTc, detachTc, destroyClsact, deviceName } from './link';
export type { Attachment, TcDirection, TcTag } from './link';
export { inNetns } from './netns';
export { RingReader } from './ringbuf';
export type { RecordHandler } from './ringbuf';
export { testRun } from './testrun';
export type { TestRunResult } from './testrun';
export { LibbpfError } from './error';
export type { LibbpfOp } from './error';
export { readBtfEnum } from './btf';
export { trimMalloc } from './native';
