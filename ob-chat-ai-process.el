;;; ob-chat-ai-process.el --- The chat-ai helper process and its protocol  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; This file runs the Python helper (`chat-ai --serve') and speaks its
;; protocol, described in docs/protocol.org: each request is one line of
;; JSON written to the helper's standard input, and the helper answers
;; with JSON lines carrying the request's id: `retry' events when an
;; attempt failed and is made again, `delta' events with reply text,
;; then one final event: `done' or `error', `preview' for a dry run, or
;; `providers' for a request of type "providers".
;;
;; The helper is `ob-chat-ai-helper-command' when that is set, else
;; the `chat-ai' on `exec-path', else the one that
;; `ob-chat-ai-install-helper' installed.  A new helper is first asked
;; who it is (a `hello' line); requests wait until it has answered, and a
;; helper too old for this package is refused with a line that says how
;; to reinstall it.
;;
;; Everything about the process lives here, behind three functions:
;; `ob-chat-ai-process-send' starts a request and returns its handle,
;; `ob-chat-ai-process-wait' waits for it, and `ob-chat-ai-process-cancel'
;; drops it.  Nothing secret is put on the command line: the request,
;; key included, goes through the pipe.
;;
;; One helper serves all requests (`ob-chat-ai-persistent-helper'): it is
;; started on first use, restarted after it dies, and told to exit when
;; it has been idle for `ob-chat-ai-helper-idle-timeout' seconds.  Each
;; helper process keeps its open requests, by id, in its property
;; `ob-chat-ai-requests'.

;;; Code:

;;;; Requirements

(require 'cl-lib)
(require 'seq)
(require 'subr-x)

;;;; Customization

(defgroup ob-chat-ai nil
  "Chat-completion models in Org Babel source blocks."
  :group 'org-babel
  :prefix "ob-chat-ai-")

(defcustom ob-chat-ai-helper-command nil
  "The command that runs the chat-ai helper, as a program and its arguments.
nil means find it: the `chat-ai' on the variable `exec-path', else the one that
\\[ob-chat-ai-install-helper] installed in `ob-chat-ai-helper-directory',
run as \"chat-ai --serve\".  To use another, give the full path to
its chat-ai and \"--serve\", or a Python and the arguments \"-m\"
\"chat_ai_helper\" \"--serve\"."
  :type '(choice (const :tag "Find it" nil) (repeat string)))

(defcustom ob-chat-ai-helper-directory nil
  "The virtualenv where \\[ob-chat-ai-install-helper] installs the helper.
nil means the directory ob-chat-ai/venv in `user-emacs-directory'."
  :type '(choice (const :tag "In user-emacs-directory" nil) directory))

(defcustom ob-chat-ai-persistent-helper t
  "Whether one long-lived helper serves every request.
When non-nil, the helper is started on first use and then answers
all requests, several at once, reusing its connections to each
server; it is restarted when it has died or when
`ob-chat-ai-helper-command' or `process-environment' has changed.
When nil, each request starts a helper of its own, which exits
when the request ends."
  :type 'boolean)

(defcustom ob-chat-ai-helper-idle-timeout 300
  "Seconds the persistent helper may stay idle before it is stopped.
It is started again on the next request.  nil keeps it running until
Emacs exits."
  :type '(choice (number :tag "Seconds") (const :tag "Never stop" nil)))

;;;; Errors

(define-error 'ob-chat-ai-error "chat-ai error")
(define-error 'ob-chat-ai-helper-error "chat-ai helper failed" 'ob-chat-ai-error)

(defun ob-chat-ai--user-error (format &rest args)
  "Signal a `user-error' with FORMAT and ARGS, saying it comes from chat-ai."
  (user-error "chat-ai: %s" (apply #'format-message format args)))

;;;; Requests

(cl-defstruct (ob-chat-ai-request
               (:constructor ob-chat-ai-request--create)
               (:copier nil))
  "One request to the helper and what has come back for it so far."
  (id nil :documentation "The id that tags this request's events.")
  (process nil :documentation "The helper process serving this request.")
  (on-delta nil :documentation "The function to call with each delta event.")
  (on-retry nil :documentation "The function to call with each retry event.")
  (on-queue nil :documentation "The function to call with each queued or started event.")
  (on-reasoning nil :documentation "The function to call with each reasoning event.")
  (on-tool-call nil :documentation "The function to call with each tool_call event.")
  (on-finish nil :documentation "The function to call with the done or error event.")
  (final nil :documentation "The done or error event, once it has come.")
  (heard nil :documentation "The time the helper last said something about it.")
  (patience nil :documentation "The seconds of silence after which it is dropped."))

(defconst ob-chat-ai--protocol-version 1
  "The oldest version of the helper's protocol that this package can speak.")

(defvar ob-chat-ai--next-id 0
  "The number of the last request id handed out.")

(defconst ob-chat-ai--default-timeout 600
  "The seconds the helper waits for a server when a request gives no timeout.")

(defvar ob-chat-ai--silence-margin 120
  "The seconds a request may stay unheard of beyond its timeout.
The helper may wait up to a minute before retrying, then as long as
the request's timeout for the server, without saying anything about
the request.")

(defvar ob-chat-ai--watchdog nil
  "The timer that drops requests the helper stopped talking about.")

(defun ob-chat-ai-request-finished-p (request)
  "Return non-nil when REQUEST has had its final event."
  (and (ob-chat-ai-request-final request) t))

;;;; The helper process

(defvar ob-chat-ai--helper nil
  "The persistent helper process, or nil before it is started.")

(defvar ob-chat-ai--idle-timer nil
  "The timer that stops the persistent helper once it has been idle.")

(defun ob-chat-ai-process-send (envelope &rest callbacks)
  "Send ENVELOPE, a request alist, to the helper and return its request.
CALLBACKS are keyword arguments: :on-delta is called with each
`delta' event, :on-reasoning with each `reasoning' event (a
reasoning model's thinking), :on-tool-call with each `tool_call'
event (a whole call of a tool the model asks for), :on-retry with
each `retry' event (the helper tries again after a failure),
:on-queue with each `queued' and `started' event (the request waits
its turn in the helper's queue, and then is sent), :on-finish with
the final event: `done' or `error', `preview' for a dry run,
`providers' for a providers request, `usage' for a usage request.
Events are alists with symbol keys, as `json-parse-string' makes them.
The request goes to the persistent helper, started when needed, or
to a helper of its own when `ob-chat-ai-persistent-helper' is nil."
  (let* ((id (number-to-string (cl-incf ob-chat-ai--next-id)))
         (request (ob-chat-ai-request--create
                   :id id
                   :on-delta (plist-get callbacks :on-delta)
                   :on-retry (plist-get callbacks :on-retry)
                   :on-queue (plist-get callbacks :on-queue)
                   :on-reasoning (plist-get callbacks :on-reasoning)
                   :on-tool-call (plist-get callbacks :on-tool-call)
                   :on-finish (plist-get callbacks :on-finish)
                   :heard (float-time)
                   :patience (+ (let ((timeout (alist-get 'timeout envelope)))
                                  (if (numberp timeout)
                                      timeout
                                    ob-chat-ai--default-timeout))
                                ob-chat-ai--silence-margin)))
         (process (if ob-chat-ai-persistent-helper
                      (ob-chat-ai--persistent-helper)
                    (ob-chat-ai--start-helper))))
    (setf (ob-chat-ai-request-process request) process)
    (process-put process 'ob-chat-ai-requests
                 (cons (cons id request)
                       (process-get process 'ob-chat-ai-requests)))
    (ob-chat-ai--send process
                      (concat (json-serialize (cons (cons 'id id) envelope)) "\n"))
    (unless ob-chat-ai-persistent-helper
      (ob-chat-ai--send process 'eof))
    (unless ob-chat-ai--watchdog
      (setq ob-chat-ai--watchdog (run-with-timer 1 1 #'ob-chat-ai--watch)))
    request))

(defun ob-chat-ai--persistent-helper ()
  "Return the persistent helper, starting it when it is not running.
A helper started with another command or environment than the
current ones is told to finish its requests and exit, and a new one
takes its place."
  (when ob-chat-ai--idle-timer
    (cancel-timer ob-chat-ai--idle-timer)
    (setq ob-chat-ai--idle-timer nil))
  (let ((helper ob-chat-ai--helper))
    (unless (and (process-live-p helper)
                 (equal (process-get helper 'ob-chat-ai-setup)
                        (ob-chat-ai--helper-setup)))
      (when (process-live-p helper)
        (ob-chat-ai--send helper 'eof))
      (setq helper (ob-chat-ai--start-helper)
            ob-chat-ai--helper helper))
    helper))

(defun ob-chat-ai--helper-setup ()
  "Return what a helper started now would be started with."
  (list (ob-chat-ai-find-helper) process-environment))

(defun ob-chat-ai-find-helper ()
  "Return the helper's command, or nil when there is none.
It is `ob-chat-ai-helper-command' when that is set, else the
`chat-ai' on the variable `exec-path', else the one that
\\[ob-chat-ai-install-helper] installed."
  (or ob-chat-ai-helper-command
      (let ((program (or (executable-find "chat-ai")
                         (ob-chat-ai--installed-helper))))
        (and program (list program "--serve")))))

(defun ob-chat-ai--helper-venv ()
  "Return the virtualenv directory where the installer puts the helper."
  (file-name-as-directory
   (expand-file-name (or ob-chat-ai-helper-directory
                         (locate-user-emacs-file "ob-chat-ai/venv")))))

(defun ob-chat-ai--installed-helper ()
  "Return the helper program that the installer made, or nil when there is none."
  (let ((program (expand-file-name (if (eq system-type 'windows-nt)
                                       "Scripts/chat-ai.exe"
                                     "bin/chat-ai")
                                   (ob-chat-ai--helper-venv))))
    (and (file-executable-p program) program)))

(defun ob-chat-ai--runnable-helper ()
  "Return the helper's command, or signal that there is none."
  (let* ((command (ob-chat-ai-find-helper))
         (program (car command)))
    (cond
     ((null command)
      (signal 'ob-chat-ai-helper-error
              (list (format "no chat-ai helper on `exec-path' or in %s; \
install it with M-x ob-chat-ai-install-helper"
                            (abbreviate-file-name (ob-chat-ai--helper-venv))))))
     ((not (and program (executable-find program)))
      (signal 'ob-chat-ai-helper-error
              (list (format "cannot run %s; install the helper with \
M-x ob-chat-ai-install-helper or fix `ob-chat-ai-helper-command'"
                            program))))
     (t command))))

(defun ob-chat-ai--start-helper ()
  "Start a helper process, ask who it is, and return it."
  (let* ((command (ob-chat-ai--runnable-helper))
         (stderr (generate-new-buffer " *chat-ai helper stderr*"))
         ;; Adaptive buffering would hold back the helper's short lines.
         (process-adaptive-read-buffering nil)
         (process (make-process
                   :name "chat-ai"
                   :command command
                   :connection-type 'pipe
                   :coding 'utf-8-unix
                   :noquery t
                   :buffer (generate-new-buffer " *chat-ai helper*")
                   :stderr stderr
                   :filter #'ob-chat-ai--filter
                   :sentinel #'ob-chat-ai--sentinel)))
    (let ((pipe (get-buffer-process stderr)))
      (set-process-query-on-exit-flag pipe nil)
      (set-process-sentinel pipe #'ignore))
    (process-put process 'ob-chat-ai-stderr stderr)
    (process-put process 'ob-chat-ai-setup (list command process-environment))
    (process-send-string process "{\"type\":\"hello\",\"id\":\"hello\"}\n")
    process))

(defun ob-chat-ai--send (process what)
  "Send WHAT to helper PROCESS: a line of text, or `eof' to close its input.
Until the helper has answered its hello, WHAT waits its turn."
  (cond
   ((not (process-get process 'ob-chat-ai-hello))
    (process-put process 'ob-chat-ai-pending
                 (cons what (process-get process 'ob-chat-ai-pending))))
   ((eq what 'eof) (process-send-eof process))
   (t (process-send-string process what))))

(defun ob-chat-ai--handshake (process event)
  "Take EVENT, the first from helper PROCESS: its hello, or a sign of its age.
A helper whose protocol is at least `ob-chat-ai--protocol-version'
is sent what waited for it.  Any other is stopped, and its requests
end with a line that says to reinstall it."
  (let ((protocol (and (equal (alist-get 'type event) "hello")
                       (alist-get 'protocol event))))
    (if (and (integerp protocol) (>= protocol ob-chat-ai--protocol-version))
        (let ((pending (reverse (process-get process 'ob-chat-ai-pending))))
          (process-put process 'ob-chat-ai-hello event)
          (process-put process 'ob-chat-ai-pending nil)
          (dolist (what pending)
            (ob-chat-ai--send process what)))
      (let ((line (ob-chat-ai--too-old-message process event)))
        (dolist (entry (process-get process 'ob-chat-ai-requests))
          (ob-chat-ai--finish (cdr entry) `((type . "error") (kind . "helper")
                                            (message . ,line))))
        (delete-process process)))))

(defun ob-chat-ai--too-old-message (process event)
  "Return the line that refuses helper PROCESS, whose first event was EVENT."
  (format "the helper %s is too old (%s; this ob-chat-ai needs protocol %d): \
reinstall it with M-x ob-chat-ai-install-helper"
          (car (process-command process))
          (if (equal (alist-get 'type event) "hello")
              (format "version %s, protocol %s"
                      (alist-get 'version event) (alist-get 'protocol event))
            "it does not say its version")
          ob-chat-ai--protocol-version))

(defun ob-chat-ai-process-stop-helper ()
  "Tell the persistent helper to finish its requests and exit.
The next request starts a new one."
  (when (process-live-p ob-chat-ai--helper)
    (ob-chat-ai--send ob-chat-ai--helper 'eof))
  (setq ob-chat-ai--helper nil))

(defun ob-chat-ai-process-open-requests ()
  "Return the requests that are waiting for their final event, in all helpers."
  (seq-mapcat (lambda (process)
                (and (process-get process 'ob-chat-ai-setup)
                     (mapcar #'cdr (process-get process 'ob-chat-ai-requests))))
              (process-list)))

(defun ob-chat-ai--when-idle (process)
  "Arrange for persistent helper PROCESS to stop once it has been idle long enough."
  (when (and (eq process ob-chat-ai--helper)
             (null (process-get process 'ob-chat-ai-requests))
             ob-chat-ai-helper-idle-timeout)
    (when ob-chat-ai--idle-timer
      (cancel-timer ob-chat-ai--idle-timer))
    (setq ob-chat-ai--idle-timer
          (run-with-timer ob-chat-ai-helper-idle-timeout nil
                          #'ob-chat-ai--stop-idle-helper process))))

(defun ob-chat-ai--stop-idle-helper (process)
  "Close the input of helper PROCESS if it still has no request, so that it exits."
  (setq ob-chat-ai--idle-timer nil)
  (when (and (process-live-p process)
             (null (process-get process 'ob-chat-ai-requests)))
    (process-send-eof process)))

(defun ob-chat-ai--filter (process output)
  "Handle OUTPUT from helper PROCESS: dispatch the events of its complete lines."
  (dolist (event (with-current-buffer (process-buffer process)
                   (goto-char (point-max))
                   (insert output)
                   (ob-chat-ai--read-events)))
    (if (process-get process 'ob-chat-ai-hello)
        (ob-chat-ai--dispatch process event)
      (ob-chat-ai--handshake process event))))

(defun ob-chat-ai--read-events ()
  "Return the events on the complete lines of the current buffer, and delete them.
Lines are parsed in place, and consecutive deltas of one choice are
merged into one, so that a fast stream makes little garbage and one
change to the Org buffer per read, not one per delta."
  (goto-char (point-min))
  (let ((events nil)
        (texts nil))
    (while (search-forward "\n" nil t)
      (let ((event (ob-chat-ai--parse-event (line-beginning-position 0) (1- (point))))
            (last (car events)))
        (cond
         ((null event))
         ((and last
               (equal (alist-get 'type event) "delta")
               (equal (alist-get 'type last) "delta")
               (stringp (alist-get 'text event))
               (stringp (alist-get 'text last))
               (equal (alist-get 'id event) (alist-get 'id last))
               (eql (alist-get 'choice event) (alist-get 'choice last)))
          (push (alist-get 'text event) texts))
         (t
          (ob-chat-ai--merge-texts last texts)
          (push event events)
          (setq texts (list (alist-get 'text event)))))))
    (ob-chat-ai--merge-texts (car events) texts)
    (delete-region (point-min) (point))
    (nreverse events)))

(defun ob-chat-ai--merge-texts (event texts)
  "Give delta EVENT the text of TEXTS, the last one first, when there are several."
  (when (cdr texts)
    (setf (alist-get 'text event) (apply #'concat (nreverse texts)))))

(defun ob-chat-ai--parse-event (start end)
  "Return the event on the line from START to END, or an error event about it.
The line is in the current buffer; point is left after it.  Return
nil for an empty line."
  (prog1 (condition-case nil
             (and (< start end)
                  (save-restriction
                    (narrow-to-region start end)
                    (goto-char start)
                    (let ((event (json-parse-buffer
                                  :object-type 'alist :array-type 'list
                                  :null-object nil :false-object nil)))
                      (unless (and (listp event)
                                   (seq-every-p (lambda (field)
                                                  (and (consp field) (symbolp (car field))))
                                                event))
                        (signal 'json-error nil))
                      event)))
           (json-error
            `((type . "error") (kind . "helper")
              (message . ,(format "the helper said something that is not an event: %s"
                                  (truncate-string-to-width
                                   (buffer-substring-no-properties start end) 80))))))
    (goto-char (1+ end))))

(defun ob-chat-ai--dispatch (process event)
  "Hand EVENT from PROCESS to the callback of the request it belongs to.
An event the request cannot use ends it with an error, as does a
delta or retry callback that fails."
  (let* ((requests (process-get process 'ob-chat-ai-requests))
         (id (alist-get 'id event))
         (request (cdr (if id
                           ;; A late event of a request already finished
                           ;; (cancelled) finds none, and is dropped.
                           (assoc id requests)
                         ;; An event without an id can only be about the
                         ;; one request a one-shot helper has.
                         (and (not (eq process ob-chat-ai--helper))
                              (null (cdr requests))
                              (car requests))))))
    (when (and request (not (ob-chat-ai-request-finished-p request)))
      (setf (ob-chat-ai-request-heard request) (float-time))
      (let* ((problem (ob-chat-ai--event-problem event))
             (type (alist-get 'type event))
             (callback (pcase type
                         ("delta" (ob-chat-ai-request-on-delta request))
                         ("reasoning" (ob-chat-ai-request-on-reasoning request))
                         ("tool_call" (ob-chat-ai-request-on-tool-call request))
                         ("retry" (ob-chat-ai-request-on-retry request))
                         ((or "queued" "started") (ob-chat-ai-request-on-queue request)))))
        (cond
         (problem
          (ob-chat-ai--abandon
           request
           (ob-chat-ai--error-event
            (if (stringp type)
                (format "the helper's %s event cannot be read: %s" type problem)
              (format "the helper sent an event that cannot be read: %s" problem)))))
         ((member type '("done" "error" "preview" "providers" "usage"))
          (ob-chat-ai--finish request event))
         (callback
          (let ((failure (ob-chat-ai--call callback event)))
            (when failure
              (ob-chat-ai--abandon
               request
               (ob-chat-ai--error-event
                (format "the %s could not be shown: %s" type failure)))))))))))

(defconst ob-chat-ai--max-choices 128
  "The most choices a request may ask for, as the helper checks it.")

(defun ob-chat-ai--event-problem (event)
  "Return what is wrong with the fields of EVENT for its type, or nil."
  (let ((type (alist-get 'type event)))
    (cl-flet ((check (field predicate what)
                (let ((value (alist-get field event)))
                  (unless (funcall predicate value)
                    (format "%s is %s, not %s" field
                            (truncate-string-to-width (format "%S" value) 40)
                            what)))))
      (pcase type
        ((or "delta" "reasoning")
         (or (check 'text #'stringp "a string")
             (check 'choice (lambda (choice)
                              (and (natnump choice) (< choice ob-chat-ai--max-choices)))
                    "the number of a choice")))
        ("done"
         (or (check 'finish_reasons
                    (lambda (reasons)
                      (and (proper-list-p reasons)
                           (<= (length reasons) ob-chat-ai--max-choices)
                           (seq-every-p (lambda (reason) (or (null reason) (stringp reason)))
                                        reasons)))
                    "a list of reasons")
             (check 'usage #'listp "an object")
             (check 'model (lambda (model) (or (null model) (stringp model)))
                    "a string")
             (check 'cost (lambda (cost) (or (null cost) (numberp cost))) "a number")))
        ((or "error" "retry")
         (or (check 'message #'stringp "a string")
             (check 'kind (lambda (kind) (or (null kind) (stringp kind))) "a string")))
        ("tool_call"
         (or (check 'call_id #'stringp "a string")
             (check 'name #'stringp "a string")
             (check 'arguments #'stringp "a string")
             (check 'choice #'natnump "the number of a choice")))
        ("preview" (check 'text #'stringp "a string"))
        ("queued" (or (check 'ahead #'natnump "a count")
                      (check 'wait (lambda (wait) (or (null wait) (numberp wait)))
                             "a number")))
        ((pred stringp) nil)
        (_ "it has no type")))))

(defun ob-chat-ai--error-event (message)
  "Return an error event of this side, saying MESSAGE."
  `((type . "error") (kind . "client") (message . ,message)))

(defun ob-chat-ai--finish (request event)
  "Record EVENT as the end of REQUEST and run its finish callback.
When the callback fails on a `done' event, it is called again with
an error event saying so, so that the request still ends visibly."
  (let ((process (ob-chat-ai-request-process request)))
    (setf (ob-chat-ai-request-final request) event)
    (process-put process 'ob-chat-ai-requests
                 (seq-remove (lambda (entry) (eq (cdr entry) request))
                             (process-get process 'ob-chat-ai-requests)))
    (ob-chat-ai--when-idle process))
  (let* ((on-finish (ob-chat-ai-request-on-finish request))
         (failure (ob-chat-ai--call on-finish event)))
    (when (and failure (not (equal (alist-get 'type event) "error")))
      (let ((error-event (ob-chat-ai--error-event
                          (format "the reply could not be shown: %s" failure))))
        (setf (ob-chat-ai-request-final request) error-event)
        (ob-chat-ai--call on-finish error-event)))))

(defun ob-chat-ai--call (callback event)
  "Call CALLBACK with EVENT; return nil, or the message of the error it signalled.
The error is also shown in the echo area, never raised."
  (when callback
    (condition-case err
        (progn (funcall callback event) nil)
      (error (let ((text (error-message-string err)))
               (message "chat-ai: %s" text)
               text)))))

(defun ob-chat-ai--abandon (request event)
  "Finish REQUEST with EVENT, telling its helper to drop it."
  (let ((process (ob-chat-ai-request-process request)))
    (unless (ob-chat-ai-request-finished-p request)
      (when (and (process-live-p process) (eq process ob-chat-ai--helper))
        (ob-chat-ai--send
         process
         (concat (json-serialize `((type . "cancel")
                                   (id . ,(ob-chat-ai-request-id request))))
                 "\n")))
      (ob-chat-ai--finish request event))
    (when (and (process-live-p process) (not (eq process ob-chat-ai--helper)))
      (delete-process process))))

(defun ob-chat-ai--watch ()
  "Drop the requests the helper has said nothing about for too long.
Stop watching when no request is open."
  (let ((open (ob-chat-ai-process-open-requests))
        (now (float-time)))
    (dolist (request open)
      (let ((silence (- now (ob-chat-ai-request-heard request))))
        (when (> silence (ob-chat-ai-request-patience request))
          (ob-chat-ai--abandon
           request
           (ob-chat-ai--error-event
            (format "the helper said nothing about this request for %.0f seconds; \
it was dropped (if this happens again, stop the helper with \
M-x ob-chat-ai-stop-helper)" silence))))))
    (unless (ob-chat-ai-process-open-requests)
      (cancel-timer ob-chat-ai--watchdog)
      (setq ob-chat-ai--watchdog nil))))

(defun ob-chat-ai--sentinel (process _change)
  "Finish every open request of PROCESS once the helper has exited."
  (unless (process-live-p process)
    (let ((open (process-get process 'ob-chat-ai-requests))
          (stderr (process-get process 'ob-chat-ai-stderr)))
      (when (eq process ob-chat-ai--helper)
        (setq ob-chat-ai--helper nil))
      (when open
        (let ((message (ob-chat-ai--exit-message process stderr)))
          (dolist (entry open)
            (ob-chat-ai--finish (cdr entry)
                                `((type . "error") (kind . "helper")
                                  (message . ,message))))))
      (dolist (buffer (list stderr (process-buffer process)))
        (when (buffer-live-p buffer)
          (kill-buffer buffer))))))

(defun ob-chat-ai--exit-message (process stderr)
  "Return one line saying how helper PROCESS ended, from its STDERR buffer."
  (let* ((pipe (get-buffer-process stderr))
         (text (progn
                 (when (process-live-p pipe)
                   (accept-process-output pipe 0.2))
                 (if (buffer-live-p stderr)
                     (with-current-buffer stderr (buffer-string))
                   "")))
         (last-line (car (last (split-string text "\n" t "[ \t]+")))))
    (concat (if (eq (process-status process) 'signal)
                (format "the helper was killed by signal %d"
                        (process-exit-status process))
              (format "the helper exited with status %d before answering"
                      (process-exit-status process)))
            (if last-line (concat ": " last-line) ""))))

(defun ob-chat-ai-process-cancel (request)
  "Drop REQUEST and finish it as cancelled.
The persistent helper is told to stop the request; a helper of the
request's own is stopped."
  (ob-chat-ai--abandon request '((type . "error") (kind . "cancelled")
                                 (message . "cancelled"))))

(defun ob-chat-ai-stop-helper ()
  "Stop the persistent helper; its open requests end with an error.
The next request starts a new one."
  (interactive)
  (if (process-live-p ob-chat-ai--helper)
      (delete-process ob-chat-ai--helper)
    (message "chat-ai: the helper is not running")))

(defun ob-chat-ai-process-wait (request)
  "Wait until REQUEST has finished and return its final event.
Quitting (\\[keyboard-quit]) while waiting cancels the request."
  (condition-case nil
      (while (not (ob-chat-ai-request-finished-p request))
        (accept-process-output (ob-chat-ai-request-process request) 0.05))
    (quit (ob-chat-ai-process-cancel request)
          (signal 'quit nil)))
  (ob-chat-ai-request-final request))

(provide 'ob-chat-ai-process)

;;; ob-chat-ai-process.el ends here
