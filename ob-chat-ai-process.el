;;; ob-chat-ai-process.el --- The chat-ai helper process and its protocol  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; This file runs the Python helper (`chat-ai --serve') and speaks its
;; protocol, described in docs/protocol.org: each request is one line of
;; JSON written to the helper's standard input, and the helper answers
;; with JSON lines carrying the request's id: `delta' events with reply
;; text, then one `done' or `error' event.
;;
;; Everything about the process lives here, behind three functions:
;; `ob-chat-ai-process-send' starts a request and returns its handle,
;; `ob-chat-ai-process-wait' waits for it, and `ob-chat-ai-process-cancel'
;; drops it.  Nothing secret is put on the command line: the request,
;; key included, goes through the pipe.

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

(defcustom ob-chat-ai-helper-command '("chat-ai" "--serve")
  "The command that runs the chat-ai helper, as a program and its arguments.
The helper is the `chat-ai' command installed by this package's
Python part (pip install it from the package directory).  To use a
virtual environment, give the full path to its chat-ai, or a Python
and the arguments \"-m\" \"chat_ai_helper\" \"--serve\"."
  :type '(repeat string))

;;;; Errors

(define-error 'ob-chat-ai-error "chat-ai error")
(define-error 'ob-chat-ai-helper-error "chat-ai helper failed" 'ob-chat-ai-error)

;;;; Requests

(cl-defstruct (ob-chat-ai-request
               (:constructor ob-chat-ai-request--create)
               (:copier nil))
  "One request to the helper and what has come back for it so far."
  (id nil :documentation "The id that tags this request's events.")
  (process nil :documentation "The helper process serving this request.")
  (on-delta nil :documentation "The function to call with each delta event.")
  (on-finish nil :documentation "The function to call with the done or error event.")
  (final nil :documentation "The done or error event, once it has come."))

(defvar ob-chat-ai--next-id 0
  "The number of the last request id handed out.")

(defun ob-chat-ai-request-finished-p (request)
  "Return non-nil when REQUEST has had its final event."
  (and (ob-chat-ai-request-final request) t))

;;;; The helper process

(defun ob-chat-ai-process-send (envelope &rest callbacks)
  "Send ENVELOPE, a request alist, to a new helper and return its request.
CALLBACKS are keyword arguments: :on-delta is called with each
`delta' event, :on-finish with the final `done' or `error' event.
Events are alists with symbol keys, as `json-parse-string' makes them."
  (let* ((id (number-to-string (cl-incf ob-chat-ai--next-id)))
         (request (ob-chat-ai-request--create
                   :id id
                   :on-delta (plist-get callbacks :on-delta)
                   :on-finish (plist-get callbacks :on-finish)))
         (process (ob-chat-ai--start-helper)))
    (setf (ob-chat-ai-request-process request) process)
    (process-put process 'ob-chat-ai-requests (list (cons id request)))
    (process-send-string
     process
     (concat (json-serialize (cons (cons 'id id) envelope)) "\n"))
    (process-send-eof process)
    request))

(defun ob-chat-ai--start-helper ()
  "Start a helper process and return it."
  (let ((program (car ob-chat-ai-helper-command)))
    (unless (and program (executable-find program))
      (signal 'ob-chat-ai-helper-error
              (list (format "cannot run %s; install the helper with pip \
or set `ob-chat-ai-helper-command'"
                            program)))))
  (let* ((stderr (generate-new-buffer " *chat-ai helper stderr*"))
         (process (make-process
                   :name "chat-ai"
                   :command ob-chat-ai-helper-command
                   :connection-type 'pipe
                   :coding 'utf-8-unix
                   :noquery t
                   :buffer (generate-new-buffer " *chat-ai helper*")
                   :stderr stderr
                   :filter #'ob-chat-ai--filter
                   :sentinel #'ob-chat-ai--sentinel)))
    (set-process-query-on-exit-flag (get-buffer-process stderr) nil)
    (process-put process 'ob-chat-ai-stderr stderr)
    process))

(defun ob-chat-ai--filter (process output)
  "Handle OUTPUT from helper PROCESS: dispatch the events of its complete lines."
  (dolist (event (with-current-buffer (process-buffer process)
                   (goto-char (point-max))
                   (insert output)
                   (ob-chat-ai--read-events)))
    (ob-chat-ai--dispatch process event)))

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
                    (json-parse-buffer :object-type 'alist :array-type 'list
                                       :null-object nil :false-object nil)))
           (json-error
            `((type . "error") (kind . "helper")
              (message . ,(format "the helper said something that is not JSON: %s"
                                  (truncate-string-to-width
                                   (buffer-substring-no-properties start end) 80))))))
    (goto-char (1+ end))))

(defun ob-chat-ai--dispatch (process event)
  "Hand EVENT from PROCESS to the callback of the request it belongs to."
  (let* ((requests (process-get process 'ob-chat-ai-requests))
         (request (cdr (or (assoc (alist-get 'id event) requests)
                           ;; An event without a usable id can only be
                           ;; about the one request a one-shot helper has.
                           (and (null (cdr requests)) (car requests))))))
    (when (and request (not (ob-chat-ai-request-finished-p request)))
      (pcase (alist-get 'type event)
        ("delta" (ob-chat-ai--call (ob-chat-ai-request-on-delta request) event))
        ((or "done" "error") (ob-chat-ai--finish request event))))))

(defun ob-chat-ai--finish (request event)
  "Record EVENT as the end of REQUEST and run its finish callback."
  (setf (ob-chat-ai-request-final request) event)
  (ob-chat-ai--call (ob-chat-ai-request-on-finish request) event))

(defun ob-chat-ai--call (callback event)
  "Call CALLBACK with EVENT, reporting any error instead of raising it."
  (when callback
    (condition-case err
        (funcall callback event)
      (error (message "chat-ai: %s" (error-message-string err))))))

(defun ob-chat-ai--sentinel (process _change)
  "Finish every open request of PROCESS once the helper has exited."
  (unless (process-live-p process)
    (let ((open (seq-remove (lambda (entry)
                              (ob-chat-ai-request-finished-p (cdr entry)))
                            (process-get process 'ob-chat-ai-requests)))
          (stderr (process-get process 'ob-chat-ai-stderr)))
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
  "Drop REQUEST: stop its helper and finish it as cancelled."
  (unless (ob-chat-ai-request-finished-p request)
    (ob-chat-ai--finish request '((type . "error") (kind . "cancelled")
                                  (message . "cancelled"))))
  (let ((process (ob-chat-ai-request-process request)))
    (when (process-live-p process)
      (delete-process process))))

(defun ob-chat-ai-process-wait (request)
  "Wait until REQUEST has finished and return its final event.
Quitting (\\[keyboard-quit]) while waiting cancels the request."
  (condition-case nil
      (while (not (ob-chat-ai-request-finished-p request))
        (accept-process-output nil 0.05))
    (quit (ob-chat-ai-process-cancel request)
          (signal 'quit nil)))
  (ob-chat-ai-request-final request))

(provide 'ob-chat-ai-process)

;;; ob-chat-ai-process.el ends here
